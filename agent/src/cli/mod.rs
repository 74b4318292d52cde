//! The CLI: each command is one API call and a table or JSON on stdout.
//! Errors go to stderr with the API's code; the exit status is 1.

pub mod args;
mod cluster;
pub(crate) mod doctor;
mod drain;
pub mod duration;
mod events;
pub mod kernel_view;
mod table;
mod uninstall;

use std::process::ExitCode;

use serde_json::Value;

use args::{AgentArgs, Cli, Command, EngineCmd, Output, ReplicaCmd, SnapshotCmd};
use vigil_client::{ApiClient, CallError, SnapshotOwner};
use vigil_model::wire::*;

/// Runs one invocation.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Agent(a) => run_agent(*a).await,
        Command::Doctor { bundle: None } => doctor::doctor(&cli.endpoint, cli.output).await,
        Command::Doctor { bundle: Some(file) } => match crate::bundle::offline::report(&file) {
            Ok((bundle, view, report)) => {
                eprintln!("{}", crate::bundle::offline::origin(&bundle));
                let code = doctor::print(&report, cli.output);
                if cli.output == Output::Table {
                    print!("{}", kernel_view::section_of_view(&view));
                }
                code
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::SupportBundle(args) => {
            let api = ApiClient::new(&cli.endpoint).with_token(cli_token(&cli.token_file));
            crate::bundle::cli::run(&api, args, cli.output).await
        }
        Command::Bundle(crate::bundle::cli::BundleCmd::Inspect { file, volume }) => {
            crate::bundle::offline::inspect(&file, volume.as_deref(), cli.output)
        }
        Command::Uninstall(args) => {
            let api = ApiClient::new(&cli.endpoint).with_token(cli_token(&cli.token_file));
            uninstall::run(&api, args, cli.output).await
        }
        Command::Node(args::NodeCmd::DrainCheck { name }) => {
            let api = ApiClient::new(&cli.endpoint).with_token(cli_token(&cli.token_file));
            drain::check(&api, &name, cli.output).await
        }
        Command::Node(args::NodeCmd::Drain { name, timeout }) => {
            let api = ApiClient::new(&cli.endpoint).with_token(cli_token(&cli.token_file));
            drain::drain(&api, &name, timeout, cli.output).await
        }
        Command::Events {
            volume,
            node,
            object,
            since,
            limit,
            follow: true,
        } => {
            let api = ApiClient::new(&cli.endpoint).with_token(cli_token(&cli.token_file));
            let filter = events::Filter {
                volume,
                node,
                object,
                since,
                limit,
            };
            events::follow(&api, &filter, cli.output == Output::Json).await
        }
        cmd => {
            let api = ApiClient::new(&cli.endpoint).with_token(cli_token(&cli.token_file));
            match call(&api, cmd).await {
                Ok((value, render)) => {
                    if cli.output == Output::Json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&value).unwrap_or_default()
                        );
                    } else {
                        print!("{}", render(&value));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

pub(crate) type Render = fn(&Value) -> String;

async fn call(api: &ApiClient, cmd: Command) -> Result<(Value, Render), CallError> {
    Ok(match cmd {
        Command::Agent(_) => unreachable!("handled by run"),
        Command::Doctor { .. } => unreachable!("handled by run"),
        Command::SupportBundle(_) | Command::Bundle(_) => unreachable!("handled by run"),
        Command::Uninstall(_) => unreachable!("handled by run"),
        Command::Health(cmd) => doctor::health(api, cmd).await?,
        Command::Replica(ReplicaCmd::Create { name, size }) => (
            json(api.create_replica(&CreateReplica { name, size }).await?),
            table::replica_created,
        ),
        Command::Replica(ReplicaCmd::List) => (json(api.replicas().await?), |v| {
            table::typed(v, |x: &Vec<ReplicaView>| table::replica_list(x))
        }),
        Command::Replica(ReplicaCmd::Show { name }) => (json(api.replica(&name).await?), |v| {
            table::typed(v, table::replica_show)
        }),
        Command::Replica(ReplicaCmd::Verify { name }) => {
            (json(api.verify_replica(&name).await?), table::verify)
        }
        Command::Replica(ReplicaCmd::Delete { name }) => {
            (json(api.delete_replica(&name).await?), table::done)
        }
        Command::Engine(EngineCmd::Create {
            name,
            size,
            replicas,
        }) => (
            json(
                api.create_engine(&CreateEngine {
                    name,
                    size,
                    replicas,
                })
                .await?,
            ),
            table::engine_created,
        ),
        Command::Engine(EngineCmd::List) => (json(api.engines().await?), table::engine_list),
        Command::Engine(EngineCmd::Show { name }) => {
            (json(api.engine(&name).await?), table::engine_show)
        }
        Command::Engine(EngineCmd::AddReplica { name, url }) => (
            json(api.add_engine_replica(&name, &AddReplica { url }).await?),
            table::engine_show,
        ),
        Command::Engine(EngineCmd::Delete { name }) => {
            (json(api.delete_engine(&name).await?), table::done)
        }
        Command::Snapshot(cmd) => snapshot(api, SnapshotOwner::Engine, cmd).await?,
        Command::Volume(cmd) => cluster::volume(api, cmd).await?,
        Command::Node(cmd) => cluster::node(api, cmd).await?,
        Command::Disk(cmd) => cluster::disk(api, cmd).await?,
        Command::Settings(cmd) => cluster::settings(api, cmd).await?,
        Command::Events {
            volume,
            node,
            object,
            since,
            limit,
            ..
        } => {
            let filter = events::Filter {
                volume,
                node,
                object,
                since,
                limit,
            };
            events::list(api, &filter).await?
        }
    })
}

/// Snapshot commands on an engine or a volume (`owner`).
async fn snapshot(
    api: &ApiClient,
    owner: SnapshotOwner,
    cmd: SnapshotCmd,
) -> Result<(Value, Render), CallError> {
    Ok(match cmd {
        SnapshotCmd::Create { volume, snapshot } => (
            json(
                api.create_snapshot(owner, &volume, &CreateSnapshot { name: snapshot })
                    .await?,
            ),
            table::snapshot_created,
        ),
        SnapshotCmd::List { volume } => (json(api.snapshots(owner, &volume).await?), |v| {
            table::typed(v, table::snapshot_list)
        }),
        SnapshotCmd::Delete { volume, snapshot } => (
            json(api.remove_snapshot(owner, &volume, &snapshot).await?),
            table::done,
        ),
        SnapshotCmd::Revert { volume, snapshot } => (
            json(api.revert_snapshot(owner, &volume, &snapshot).await?),
            table::done,
        ),
    })
}

/// An answer as JSON, for `--json` output and the renderers.
pub(crate) fn json<T: serde::Serialize>(answer: T) -> Value {
    serde_json::to_value(answer).unwrap_or(Value::Null)
}

async fn run_agent(a: AgentArgs) -> ExitCode {
    let node_name = a.node_name.unwrap_or_else(hostname);
    let log_file = a.log_file.map(|path| crate::telemetry::file::LogFile {
        path,
        max_bytes: a.log_file_max_size,
        keep: usize::from(a.log_file_keep),
    });
    let telemetry = crate::telemetry::init(&crate::telemetry::Config {
        log_format: a.log_format,
        node: node_name.clone(),
        otlp_endpoint: a.otlp_endpoint,
        trace_io_sample_rate: a.trace_io_sample_rate,
        log_file: log_file.clone(),
    });
    if let Err(e) = crate::metrics::install() {
        // Metrics are for watching; an agent that cannot have them still serves.
        tracing::error!(error = %e, "metrics unavailable");
    }
    vigil_engine::ring::set_io_engine(a.io_engine.into());
    match vigil_engine::ring::probe() {
        Ok(()) => tracing::info!("replica I/O through io_uring"),
        Err(why) => tracing::info!(reason = %why, "replica I/O on the blocking pool"),
    }
    let engine = vigil_engine::engine::EngineConfig {
        io_timeout: std::time::Duration::from_secs(a.io_timeout_secs.max(1)),
        ping_interval: std::time::Duration::from_millis(a.ping_interval_ms.max(50)),
        ping_timeout: std::time::Duration::from_millis(a.ping_timeout_ms.max(50)),
    };
    if let Err(e) = crate::ebpf::start(a.ebpf, &a.ebpf_probes, a.ebpf_syscall_duty) {
        tracing::error!(reason = e.reason.as_str(), error = %e, "agent failed to start: --ebpf required");
        eprintln!("error: --ebpf required: {e}");
        telemetry.shutdown().await;
        return ExitCode::FAILURE;
    }
    let config = crate::daemon::AgentConfig {
        node_name,
        data_dir: a.data_dir,
        listen: a.listen,
        replica_listen: a.replica_listen,
        nbd_listen: a.nbd_listen,
        nbd_socket: a.nbd_socket,
        advertise: a.advertise,
        engine,
        disks: a.disks,
        labels: a.labels.into_iter().collect(),
        store: a.store,
        log_file,
    };
    let code = match crate::daemon::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "agent failed to start");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    };
    // After SIGTERM: send the spans still buffered.
    telemetry.shutdown().await;
    code
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

/// The token the CLI sends: `--token-file`, else `VIGIL_CLUSTER_TOKEN`.
fn cli_token(file: &Option<std::path::PathBuf>) -> Option<String> {
    if let Some(f) = file {
        match std::fs::read_to_string(f) {
            Ok(t) => return Some(t.trim().to_string()),
            Err(e) => eprintln!("warning: cannot read token file {}: {e}", f.display()),
        }
    }
    std::env::var("VIGIL_CLUSTER_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}
