//! Command-line arguments. The flags are a contract: scripts and later issues rely on them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// keygate: deploy a serverless.yml and serve its functions behind API keys.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Directory holding keygate's state (the embedded SQLite store and staged artifacts).
    #[arg(long, global = true, env = "KEYGATE_DATA_DIR", default_value = ".keygate")]
    pub(crate) data_dir: PathBuf,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Deploy a service, then serve it in the foreground (the main job).
    Up {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Deploy a service to a stage: snapshot its definition, create its keys and usage plan.
    Deploy {
        #[command(flatten)]
        service: ServiceArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve every deployed stage.
    Serve {
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Show what is deployed for a service and stage (like `serverless info`).
    Info {
        #[command(flatten)]
        service: ServiceArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

impl Command {
    /// Whether the command runs a server (and so logs at `info` by default).
    pub(crate) fn is_server(&self) -> bool {
        matches!(self, Self::Up { .. } | Self::Serve { .. })
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServiceArgs {
    /// The service's serverless.yml.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Stage to deploy (default: provider.stage from the file, else `dev`).
    #[arg(long, short = 's')]
    pub(crate) stage: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// Address the gateway listens on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:4000", env = "KEYGATE_LISTEN")]
    pub(crate) listen: SocketAddr,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create an API key. Its value is printed once; keygate keeps only a digest.
    Create {
        /// Unique name of the key.
        #[arg(long)]
        name: String,
        /// A custom value (20-128 letters and digits); generated when omitted.
        #[arg(long)]
        value: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// AWS Marketplace-style customer id, free text.
        #[arg(long)]
        customer_id: Option<String>,
        /// Create the key disabled.
        #[arg(long)]
        disabled: bool,
        /// Usage plan (id or name) to add the key to; the key works on that plan's stages.
        #[arg(long)]
        usage_plan: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List API keys (values are never shown: only a prefix).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one API key.
    Get {
        /// Key id or name.
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Enable a key.
    Enable {
        /// Key id or name.
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Disable a key; running gateways refuse it within a second.
    Disable {
        /// Key id or name.
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a key for good.
    Delete {
        /// Key id or name.
        key: String,
        #[arg(long)]
        json: bool,
    },
}
