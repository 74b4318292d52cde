//! The cluster model: what the store holds. Each object is a desired `spec`
//! (written by users through the API) plus an observed `status` (written by
//! the controller that owns it), stored as JSON under
//! `<kind>/<name>` (see [`Object::key`]). States are the enums of [`state`];
//! their transitions are checked there.

pub mod disk;
pub mod engine;
pub mod epoch;
pub mod event;
pub mod eviction;
pub mod insync;
pub mod kernel_io;
pub mod maintenance;
pub mod migration;
pub mod mute;
pub mod node;
pub mod replica;
pub mod settings;
pub mod state;
pub mod time;
pub mod uninstall;
pub mod volume;
pub mod wire;

pub use disk::Disk;
pub use engine::Engine;
pub use event::{Event, EventReason};
pub use mute::Mute;
pub use node::Node;
pub use replica::Replica;
pub use state::{InstanceState, VolumeState};
pub use volume::Volume;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A kind of object kept in the store.
pub trait Object: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Key prefix of the kind, e.g. `volumes/`.
    const PREFIX: &'static str;
    /// Name of the kind for messages, e.g. `volume`.
    const KIND: &'static str;
    /// The object's name: unique within its kind.
    fn name(&self) -> &str;
    /// Its store key.
    fn key(&self) -> String {
        key_of::<Self>(self.name())
    }
}

/// The store key of the object of kind `T` named `name`.
pub fn key_of<T: Object>(name: &str) -> String {
    format!("{}{name}", T::PREFIX)
}

/// An object as read from the store, with the revision a compare-and-swap
/// update must name.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub object: T,
    pub revision: i64,
}

pub use time::now_unix;
