//! Repair verbs: `hangar repair`, `hangar worker`, `hangar block`, `hangar node remove`.
//! As in Garage: repairs run in the background on the data nodes; `worker list` shows how
//! far they are.

use clap::Subcommand;
use hangar_proto::control::*;

use crate::admin::{Admin, CliResult, ms_to_date, print_plan, role_name, table};

#[derive(Subcommand)]
pub enum RepairCommand {
    /// Compare every table with the other replicas now (anti-entropy) and pull what differs.
    Tables {
        /// Only on this data node (its id or a unique prefix).
        #[arg(long)]
        node: Option<String>,
    },
    /// Check every block: fetch referenced blocks that are missing, queue files nothing
    /// references for deletion.
    Blocks {
        #[arg(long)]
        node: Option<String>,
    },
    /// Apply the buckets' lifecycle rules now (expire objects, abort old uploads) instead of
    /// at the next daily pass.
    Lifecycle {
        #[arg(long)]
        node: Option<String>,
    },
    /// Read every block and check its hash; corrupt ones are replaced from other replicas.
    Scrub {
        #[command(subcommand)]
        cmd: ScrubCommandArg,
    },
}

#[derive(Subcommand)]
pub enum ScrubCommandArg {
    /// Start a scrub now (from the first block).
    Start {
        #[arg(long)]
        node: Option<String>,
    },
    /// Pause a running scrub.
    Pause {
        #[arg(long)]
        node: Option<String>,
    },
    /// Resume a paused scrub where it stopped.
    Resume {
        #[arg(long)]
        node: Option<String>,
    },
    /// Stop a scrub; the next one comes a scrub-interval later.
    Cancel {
        #[arg(long)]
        node: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum WorkerCommand {
    /// Every background worker of every node: state, queue, progress, errors.
    List {
        #[arg(long)]
        node: Option<String>,
    },
    /// The worker variables of every data node.
    Get {
        #[arg(long)]
        node: Option<String>,
    },
    /// Set a worker variable: scrub-tranquility, scrub-interval (30d, 12h, seconds),
    /// resync-tranquility, resync-worker-count (1 to 8).
    Set {
        #[arg(long)]
        node: Option<String>,
        name: String,
        value: String,
    },
}

#[derive(Subcommand)]
pub enum BlockCommand {
    /// The data versions that use a block and the nodes that hold it.
    Info {
        /// The block's hash (64 hex digits).
        hash: String,
    },
    /// Blocks a data node should hold but could not fetch, with the last error.
    ListErrors,
    /// Try failed block fetches again now.
    RetryNow {
        /// Every failing block.
        #[arg(long)]
        all: bool,
        /// Block hashes (64 hex digits).
        hashes: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Remove a data node that is gone for good (its disks lost): its role is removed and
    /// the next layout version applied at once; the other nodes rebuild its partitions
    /// from the surviving replicas.
    Remove {
        /// The node's id or a unique prefix of it.
        node: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
        /// Remove it even though it still heartbeats.
        #[arg(long)]
        force: bool,
    },
}

fn print_results(r: RepairReply) {
    for line in r.results {
        println!("{line}");
    }
}

pub async fn repair(c: &Admin, cmd: RepairCommand) -> CliResult {
    let (kind, scrub, node) = match cmd {
        RepairCommand::Tables { node } => (RepairKind::Tables, ScrubCommand::Unspecified, node),
        RepairCommand::Blocks { node } => (RepairKind::Blocks, ScrubCommand::Unspecified, node),
        RepairCommand::Lifecycle { node } => (RepairKind::Lifecycle, ScrubCommand::Unspecified, node),
        RepairCommand::Scrub { cmd } => {
            let (s, node) = match cmd {
                ScrubCommandArg::Start { node } => (ScrubCommand::Start, node),
                ScrubCommandArg::Pause { node } => (ScrubCommand::Pause, node),
                ScrubCommandArg::Resume { node } => (ScrubCommand::Resume, node),
                ScrubCommandArg::Cancel { node } => (ScrubCommand::Cancel, node),
            };
            (RepairKind::Scrub, s, node)
        }
    };
    let req = RepairRequest { kind: kind as i32, scrub: scrub as i32, node: node.unwrap_or_default() };
    print_results(c.client().repair(req).await.map_err(|e| c.err(e))?.into_inner());
    Ok(())
}

pub async fn worker(c: &Admin, cmd: WorkerCommand) -> CliResult {
    let mut g = c.client();
    let vars = match cmd {
        WorkerCommand::List { node } => {
            let r =
                g.list_workers(ListWorkersRequest { node: node.unwrap_or_default() }).await.map_err(|e| c.err(e))?;
            let mut rows = Vec::new();
            for n in r.into_inner().nodes {
                let node = format!("{} ({}{})", n.node, role_name(n.role), if n.healthy { "" } else { ", down" });
                for w in n.workers {
                    rows.push(vec![
                        node.clone(),
                        w.name,
                        w.state,
                        w.queue_length.to_string(),
                        w.errors.to_string(),
                        w.progress,
                        w.last_error,
                    ]);
                }
            }
            table(&["NODE", "WORKER", "STATE", "QUEUE", "ERRORS", "PROGRESS", "LAST ERROR"], &rows);
            return Ok(());
        }
        WorkerCommand::Get { node } => WorkerVariableRequest { node: node.unwrap_or_default(), ..Default::default() },
        WorkerCommand::Set { node, name, value } => {
            WorkerVariableRequest { node: node.unwrap_or_default(), name, value }
        }
    };
    let r = g.set_worker_variable(vars).await.map_err(|e| c.err(e))?.into_inner();
    let rows: Vec<Vec<String>> = r.variables.into_iter().map(|v| vec![v.node, v.name, v.value]).collect();
    table(&["NODE", "VARIABLE", "VALUE"], &rows);
    Ok(())
}

pub async fn block(c: &Admin, cmd: BlockCommand) -> CliResult {
    let mut g = c.client();
    match cmd {
        BlockCommand::Info { hash } => {
            let r = g.block_info(BlockInfoRequest { hash }).await.map_err(|e| c.err(e))?.into_inner();
            println!("Block: {}", r.hash);
            println!("Partition: {}", r.partition);
            if r.uses.is_empty() {
                println!("Used by: nothing");
            } else {
                println!("Used by:");
                let rows: Vec<Vec<String>> = r
                    .uses
                    .iter()
                    .map(|u| {
                        vec![
                            hex::encode(&u.data_version),
                            if u.deleted { "released".into() } else { "live".into() },
                            ms_to_date(u.timestamp / 1000),
                            u.pending_for.clone(),
                        ]
                    })
                    .collect();
                table(&["DATA VERSION", "REFERENCE", "SINCE", "BEING WRITTEN FOR"], &rows);
            }
            println!("Nodes:");
            let rows: Vec<Vec<String>> = r
                .holders
                .iter()
                .map(|h| {
                    vec![
                        h.node.clone(),
                        if h.replica { "yes".into() } else { "no".into() },
                        if !h.error.is_empty() {
                            format!("unknown: {}", h.error)
                        } else if h.present {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                    ]
                })
                .collect();
            table(&["NODE", "REPLICA", "HAS IT"], &rows);
        }
        BlockCommand::ListErrors => {
            let r = g.list_block_errors(BlockErrorsRequest::default()).await.map_err(|e| c.err(e))?.into_inner();
            if r.errors.is_empty() {
                println!("No block resync is failing.");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = r
                .errors
                .iter()
                .map(|e| {
                    vec![
                        e.node.clone(),
                        hex::encode(&e.hash),
                        e.errors.to_string(),
                        if e.last_try_ms == 0 { "-".into() } else { ms_to_date(e.last_try_ms) },
                        if e.next_try_ms == 0 { "-".into() } else { ms_to_date(e.next_try_ms) },
                        e.last_error.clone(),
                    ]
                })
                .collect();
            table(&["NODE", "BLOCK", "ERRORS", "LAST TRY", "NEXT TRY", "LAST ERROR"], &rows);
            let listed = r.errors.iter().filter(|e| !e.hash.is_empty()).count() as u64;
            if r.total > listed {
                println!("... and {} more failing blocks", r.total - listed);
            }
        }
        BlockCommand::RetryNow { all, hashes } => {
            if !all && hashes.is_empty() {
                return Err("name the blocks to retry, or give --all".into());
            }
            let r = g
                .retry_blocks(RetryBlocksRequest { node: String::new(), all, hashes })
                .await
                .map_err(|e| c.err(e))?
                .into_inner();
            println!("{} block fetches queued to run now (on the nodes that needed them)", r.queued);
        }
    }
    Ok(())
}

pub async fn node(c: &Admin, cmd: NodeCommand) -> CliResult {
    match cmd {
        NodeCommand::Remove { node, yes, force } => {
            if !yes {
                return Err(format!(
                    "`node remove {node}` removes the node from the layout for good and applies the next layout \
                     version; its data is rebuilt from the other replicas. Add --yes to confirm"
                )
                .into());
            }
            let plan = c
                .client()
                .remove_node(RemoveNodeRequest { node: node.clone(), force })
                .await
                .map_err(|e| c.err(e))?
                .into_inner();
            println!("Removed node {node}; layout version {} applied.", plan.version);
            print_plan(&plan);
        }
    }
    Ok(())
}
