//! One typed call per route of the agent's API (`api::routes::route` on
//! the server is the other side). Each names its method and path once, so
//! a caller cannot get either wrong, and decodes into the wire type the
//! server encodes from. The few answers whose types live above this crate
//! (the health report, the drain check, health mutes, a node's part of a
//! support bundle) are decoded into the type the caller names.

use bytes::Bytes;
use hyper::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use vigil_model::Event;
use vigil_model::wire::*;

use crate::{ApiClient, CallError};

type Result<T> = std::result::Result<T, CallError>;

const NONE: Option<&()> = None;

impl ApiClient {
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, NONE).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::POST, path, NONE).await
    }

    async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::DELETE, path, NONE).await
    }

    // ---- this agent ----

    /// `GET /v1/node`: the agent answering.
    pub async fn node(&self) -> Result<NodeView> {
        self.get("/v1/node").await
    }

    /// `GET /v1/logs?limit=N`: its newest log lines.
    pub async fn logs(&self, limit: usize) -> Result<LogLines> {
        self.get(&format!("/v1/logs?limit={limit}")).await
    }

    /// `GET /v1/support-bundle/node?QUERY`: its part of a support bundle.
    pub async fn support_bundle_node<T: DeserializeOwned>(&self, query: &str) -> Result<T> {
        if query.is_empty() {
            self.get("/v1/support-bundle/node").await
        } else {
            self.get(&format!("/v1/support-bundle/node?{query}")).await
        }
    }

    /// `POST /v1/support-bundle`: the whole bundle, as an archive.
    pub async fn support_bundle<B: Serialize>(&self, req: &B) -> Result<Bytes> {
        self.call_bytes(Method::POST, "/v1/support-bundle", Some(req))
            .await
    }

    // ---- volumes ----

    /// `GET /v1/volumes`.
    pub async fn volumes(&self) -> Result<Vec<VolumeView>> {
        self.get("/v1/volumes").await
    }

    /// `GET /v1/volumes/NAME`.
    pub async fn volume(&self, name: &str) -> Result<VolumeView> {
        self.get(&format!("/v1/volumes/{name}")).await
    }

    /// `POST /v1/volumes`.
    pub async fn create_volume(&self, req: &CreateVolume) -> Result<VolumeView> {
        self.post("/v1/volumes", req).await
    }

    /// `DELETE /v1/volumes/NAME`: asks for the deletion (it completes in the
    /// background).
    pub async fn delete_volume(&self, name: &str) -> Result<VolumeView> {
        self.delete(&format!("/v1/volumes/{name}")).await
    }

    /// `POST /v1/volumes/NAME/attach`.
    pub async fn attach_volume(&self, name: &str, req: &AttachVolume) -> Result<VolumeView> {
        self.post(&format!("/v1/volumes/{name}/attach"), req).await
    }

    /// `POST /v1/volumes/NAME/detach`.
    pub async fn detach_volume(&self, name: &str) -> Result<VolumeView> {
        self.post_empty(&format!("/v1/volumes/{name}/detach")).await
    }

    /// `POST /v1/volumes/NAME/migrate`.
    pub async fn migrate_volume(&self, name: &str, req: &MigrateVolume) -> Result<VolumeView> {
        self.post(&format!("/v1/volumes/{name}/migrate"), req).await
    }

    /// `POST /v1/volumes/NAME/migrate/confirm`.
    pub async fn confirm_migration(&self, name: &str) -> Result<VolumeView> {
        self.post_empty(&format!("/v1/volumes/{name}/migrate/confirm"))
            .await
    }

    /// `POST /v1/volumes/NAME/migrate/rollback`.
    pub async fn roll_back_migration(&self, name: &str) -> Result<VolumeView> {
        self.post_empty(&format!("/v1/volumes/{name}/migrate/rollback"))
            .await
    }

    /// `POST /v1/volumes/NAME/salvage`.
    pub async fn salvage_volume(&self, name: &str, req: &SalvageVolume) -> Result<VolumeView> {
        self.post(&format!("/v1/volumes/{name}/salvage"), req).await
    }

    /// `POST /v1/volumes/NAME/expand`.
    pub async fn expand_volume(&self, name: &str, req: &ExpandVolume) -> Result<VolumeView> {
        self.post(&format!("/v1/volumes/{name}/expand"), req).await
    }

    // ---- snapshots: of a volume (wherever its engine runs) or of a local
    // engine; `owner` is `volumes` or `engines` ----

    /// `GET /v1/{volumes,engines}/NAME/snapshots`.
    pub async fn snapshots(&self, owner: SnapshotOwner, name: &str) -> Result<SnapshotList> {
        self.get(&format!("/v1/{}/{name}/snapshots", owner.segment()))
            .await
    }

    /// `POST /v1/{volumes,engines}/NAME/snapshots`.
    pub async fn create_snapshot(
        &self,
        owner: SnapshotOwner,
        name: &str,
        req: &CreateSnapshot,
    ) -> Result<LayerInfo> {
        self.post(&format!("/v1/{}/{name}/snapshots", owner.segment()), req)
            .await
    }

    /// `DELETE /v1/{volumes,engines}/NAME/snapshots/SNAP`.
    pub async fn remove_snapshot(
        &self,
        owner: SnapshotOwner,
        name: &str,
        snapshot: &str,
    ) -> Result<SnapshotRemoved> {
        self.delete(&format!(
            "/v1/{}/{name}/snapshots/{snapshot}",
            owner.segment()
        ))
        .await
    }

    /// `POST /v1/{volumes,engines}/NAME/snapshots/SNAP/revert`.
    pub async fn revert_snapshot(
        &self,
        owner: SnapshotOwner,
        name: &str,
        snapshot: &str,
    ) -> Result<SnapshotReverted> {
        self.post_empty(&format!(
            "/v1/{}/{name}/snapshots/{snapshot}/revert",
            owner.segment()
        ))
        .await
    }

    // ---- nodes, disks, settings, events ----

    /// `GET /v1/nodes`.
    pub async fn nodes(&self) -> Result<Vec<ClusterNodeView>> {
        self.get("/v1/nodes").await
    }

    /// `GET /v1/nodes/NAME`.
    pub async fn cluster_node(&self, name: &str) -> Result<ClusterNodeView> {
        self.get(&format!("/v1/nodes/{name}")).await
    }

    /// `POST /v1/nodes/NAME`: scheduling, eviction, tags.
    pub async fn update_node(&self, name: &str, req: &UpdateNode) -> Result<ClusterNodeView> {
        self.post(&format!("/v1/nodes/{name}"), req).await
    }

    /// `GET /v1/nodes/NAME/drain-check`.
    pub async fn drain_check<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        self.get(&format!("/v1/nodes/{name}/drain-check")).await
    }

    /// `GET /v1/disks`.
    pub async fn disks(&self) -> Result<Vec<DiskView>> {
        self.get("/v1/disks").await
    }

    /// `GET /v1/settings`.
    pub async fn settings(&self) -> Result<Vec<SettingView>> {
        self.get("/v1/settings").await
    }

    /// `GET /v1/settings/NAME`.
    pub async fn setting(&self, name: &str) -> Result<SettingView> {
        self.get(&format!("/v1/settings/{name}")).await
    }

    /// `PUT /v1/settings/NAME`.
    pub async fn set_setting(&self, name: &str, req: &SetSetting) -> Result<SettingView> {
        self.call(Method::PUT, &format!("/v1/settings/{name}"), Some(req))
            .await
    }

    /// `GET /v1/events?QUERY` (kind, object, since, after, limit).
    pub async fn events(&self, query: &str) -> Result<Vec<Event>> {
        self.get(&format!("/v1/events?{query}")).await
    }

    // ---- health ----

    /// `GET /v1/health`.
    pub async fn health<T: DeserializeOwned>(&self) -> Result<T> {
        self.get("/v1/health").await
    }

    /// `GET /v1/health/mutes`.
    pub async fn health_mutes<T: DeserializeOwned>(&self) -> Result<T> {
        self.get("/v1/health/mutes").await
    }

    /// `POST /v1/health/mutes`.
    pub async fn mute<B: Serialize, T: DeserializeOwned>(&self, req: &B) -> Result<T> {
        self.post("/v1/health/mutes", req).await
    }

    /// `DELETE /v1/health/mutes/CODE`.
    pub async fn unmute<T: DeserializeOwned>(&self, code: &str) -> Result<T> {
        self.delete(&format!("/v1/health/mutes/{code}")).await
    }

    // ---- uninstall ----

    /// `POST /v1/uninstall`.
    pub async fn uninstall(&self) -> Result<UninstallReply> {
        self.post_empty("/v1/uninstall").await
    }

    /// `GET /v1/uninstall`.
    pub async fn uninstall_status(&self) -> Result<UninstallReply> {
        self.get("/v1/uninstall").await
    }

    // ---- this agent's replicas and engines ----

    /// `GET /v1/replicas`.
    pub async fn replicas(&self) -> Result<Vec<ReplicaView>> {
        self.get("/v1/replicas").await
    }

    /// `POST /v1/replicas`.
    pub async fn create_replica(&self, req: &CreateReplica) -> Result<ReplicaView> {
        self.post("/v1/replicas", req).await
    }

    /// `GET /v1/replicas/NAME`.
    pub async fn replica(&self, name: &str) -> Result<ReplicaView> {
        self.get(&format!("/v1/replicas/{name}")).await
    }

    /// `GET /v1/replicas/NAME/verify`: reads every block.
    pub async fn verify_replica(&self, name: &str) -> Result<VerifyView> {
        self.get(&format!("/v1/replicas/{name}/verify")).await
    }

    /// `DELETE /v1/replicas/NAME`.
    pub async fn delete_replica(&self, name: &str) -> Result<ReplicaDeleted> {
        self.delete(&format!("/v1/replicas/{name}")).await
    }

    /// `GET /v1/engines`.
    pub async fn engines(&self) -> Result<Vec<EngineView>> {
        self.get("/v1/engines").await
    }

    /// `POST /v1/engines`.
    pub async fn create_engine(&self, req: &CreateEngine) -> Result<EngineView> {
        self.post("/v1/engines", req).await
    }

    /// `GET /v1/engines/NAME`.
    pub async fn engine(&self, name: &str) -> Result<EngineView> {
        self.get(&format!("/v1/engines/{name}")).await
    }

    /// `DELETE /v1/engines/NAME`: flushes and stops it.
    pub async fn delete_engine(&self, name: &str) -> Result<EngineView> {
        self.delete(&format!("/v1/engines/{name}")).await
    }

    /// `POST /v1/engines/NAME/replicas`: adds a replica (rebuilt).
    pub async fn add_engine_replica(&self, name: &str, req: &AddReplica) -> Result<EngineView> {
        self.post(&format!("/v1/engines/{name}/replicas"), req)
            .await
    }
}

/// Whose snapshots a snapshot call names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotOwner {
    /// A volume of the cluster (served by the agent its engine runs on).
    Volume,
    /// An engine of this agent (`vigil engine create`).
    Engine,
}

impl SnapshotOwner {
    fn segment(self) -> &'static str {
        match self {
            SnapshotOwner::Volume => "volumes",
            SnapshotOwner::Engine => "engines",
        }
    }
}
