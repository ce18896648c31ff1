//! The operator's commands: the same binary talking to a server's REST API through the
//! typed client, a file per noun.
//!
//! Every command prints text for people by default and JSON with `--json`. The server's
//! error messages are printed as they are, with the status and code they came with.

mod audit;
mod conn;
mod design;
mod hosts;
mod output;
mod runs;
mod show;
mod sites;
mod tokens;
mod watch;
mod windows;
mod workflows;

use clap::Subcommand;

pub use conn::hint;

#[derive(Subcommand)]
pub enum ClientCmd {
    /// Workflow definitions on a server (the token comes from LARIAT_TOKEN).
    Workflow {
        #[command(flatten)]
        conn: conn::Conn,
        #[command(subcommand)]
        cmd: workflows::WorkflowCmd,
    },
    /// Runs on a server: submit, list, show, watch, and the operator verbs (the token
    /// comes from LARIAT_TOKEN).
    Run {
        #[command(flatten)]
        conn: conn::Conn,
        #[command(subcommand)]
        cmd: runs::RunCmd,
    },
    /// The server's audit trail, newest first: operator verbs, tokens, design syncs and
    /// pins, window overrides (admin; the token comes from LARIAT_TOKEN).
    Audit {
        #[command(flatten)]
        conn: conn::Conn,
        #[command(flatten)]
        filters: audit::AuditArgs,
    },
    /// API tokens, kept in the server's database.
    #[command(subcommand)]
    Token(tokens::TokenCmd),
    /// Sites and their agents: health, credentials, queued commands.
    Site {
        #[command(flatten)]
        conn: conn::Conn,
        #[command(subcommand)]
        cmd: sites::SiteCmd,
    },
    /// Maintenance windows of the server's design: open now or not, next openings, the
    /// steps waiting on each (the token comes from LARIAT_TOKEN).
    Window {
        #[command(flatten)]
        conn: conn::Conn,
        #[command(subcommand)]
        cmd: windows::WindowCmd,
    },
    /// The inventory: every host's state, the step acting on it, its power, facts,
    /// firmware, history and drift (the token comes from LARIAT_TOKEN).
    Host {
        #[command(flatten)]
        conn: conn::Conn,
        #[command(subcommand)]
        cmd: hosts::HostCmd,
    },
    /// How hosts differ from the design (`--plan`, the default), and the runs that fix it
    /// (`--apply`; the token comes from LARIAT_TOKEN).
    Reconcile {
        #[command(flatten)]
        conn: conn::Conn,
        #[command(flatten)]
        args: hosts::ReconcileArgs,
    },
    /// The site design: validate a folder here, or ask a server for revisions, findings,
    /// hosts and pins (the token comes from LARIAT_TOKEN).
    Design {
        #[command(flatten)]
        conn: conn::Conn,
        #[command(subcommand)]
        cmd: design::DesignCmd,
    },
}

/// Run a client command; the value is the process's exit code.
pub async fn run(cmd: ClientCmd) -> anyhow::Result<i32> {
    match cmd {
        ClientCmd::Workflow { conn, cmd } => workflows::run(conn.client()?, &conn, cmd).await,
        ClientCmd::Run { conn, cmd } => runs::run(conn.client()?, &conn, cmd).await,
        ClientCmd::Token(t) => tokens::run(t).await,
        ClientCmd::Audit { conn, filters } => audit::run(conn.client()?, &conn, filters).await,
        ClientCmd::Site { conn, cmd } => sites::run(&conn, cmd).await,
        ClientCmd::Design { conn, cmd } => design::run(&conn, cmd).await,
        ClientCmd::Host { conn, cmd } => hosts::run(conn.client()?, &conn, cmd).await,
        ClientCmd::Reconcile { conn, args } => hosts::reconcile(conn.client()?, &conn, args).await,
        ClientCmd::Window { conn, cmd } => windows::run(conn.client()?, &conn, cmd).await,
    }
}
