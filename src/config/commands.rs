//! The other commands' arguments: `migrate`, `seed` and `client`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use secrecy::SecretString;

use super::secret;
use crate::domain::EndReason;

#[derive(Debug, Clone, Args)]
pub struct DirectDatabase {
    /// PostgreSQL URL of a direct (or session-mode) connection: migrations,
    /// seeding, LISTEN. Never the transaction pooler.
    #[arg(long, env = "DATABASE_DIRECT_URL", value_parser = secret, hide_env_values = true)]
    pub database_direct_url: SecretString,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DirectDatabase,
    /// Password the daemon's role (`switchboard_daemon`) logs in with. When
    /// unset, the role is created without LOGIN, or left as it is.
    #[arg(long, env = "SWITCHBOARD_DAEMON_PASSWORD", value_parser = secret, hide_env_values = true)]
    pub daemon_password: Option<SecretString>,
    /// Adopting a single-tenant database: slug of the organization that
    /// receives its rows.
    #[arg(long, env = "SWITCHBOARD_ADOPT_ORG_SLUG", default_value = "default")]
    pub adopt_org_slug: String,
    /// Adopting: that organization's name.
    #[arg(
        long,
        env = "SWITCHBOARD_ADOPT_ORG_NAME",
        default_value = "Default organization"
    )]
    pub adopt_org_name: String,
    /// Adopting: email of an existing user who becomes the owner of every
    /// organization that would otherwise have none.
    #[arg(long, env = "SWITCHBOARD_ADOPT_OWNER_EMAIL")]
    pub adopt_owner_email: Option<String>,
    /// Adopting: country calling code for numbers stored without one.
    #[arg(long, env = "SWITCHBOARD_ADOPT_CALLING_CODE", default_value = "1")]
    pub adopt_calling_code: String,
    /// Adopting: finish even if an organization is left without an owner
    /// (recorded in switchboard.adoption_issues) instead of refusing.
    #[arg(long, env = "SWITCHBOARD_ADOPT_ALLOW_OWNERLESS")]
    pub adopt_allow_ownerless: bool,
    /// Report what the run would do to this database, then roll it all
    /// back: nothing is changed.
    #[arg(long)]
    pub dry_run: bool,
}

impl MigrateArgs {
    pub fn options(&self) -> crate::store::migrate::MigrateOptions {
        crate::store::migrate::MigrateOptions {
            adopt: crate::store::migrate::Adoption {
                org_slug: Some(self.adopt_org_slug.clone()),
                org_name: Some(self.adopt_org_name.clone()),
                owner_email: self.adopt_owner_email.clone(),
                calling_code: Some(self.adopt_calling_code.clone()),
                allow_ownerless: self.adopt_allow_ownerless,
            },
            daemon_password: self.daemon_password.clone(),
            dry_run: self.dry_run,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub database: DirectDatabase,
    /// Load the demo data set (the only data set there is).
    #[arg(long, required = true)]
    pub demo: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Address of the daemon's gRPC listener.
    #[arg(
        long,
        env = "SWITCHBOARD_CLIENT_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// Bearer token, when the daemon requires one.
    #[arg(long, env = "SWITCHBOARD_CLIENT_TOKEN", value_parser = secret, hide_env_values = true)]
    pub token: Option<SecretString>,
    /// PEM CA certificate to trust, for a daemon serving TLS (`https://` address).
    #[arg(long, env = "SWITCHBOARD_CLIENT_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a daemon requiring mutual TLS (with --key).
    #[arg(long, env = "SWITCHBOARD_CLIENT_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "SWITCHBOARD_CLIENT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    #[command(subcommand)]
    pub call: ClientCall,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ClientCall {
    /// RouteCall: route a new inbound call.
    RouteCall {
        /// The dialled number.
        #[arg(long)]
        called: String,
        /// The caller's number.
        #[arg(long, default_value = "")]
        caller: String,
        /// The gateway's id for the call (default: a fresh UUID).
        #[arg(long)]
        gateway_call_id: Option<String>,
        /// ISO 3166-1 alpha-2 region for national-format numbers.
        #[arg(long, default_value = "")]
        region: String,
    },
    /// LookupNumber: the route for a number, without side effects.
    Lookup {
        number: String,
        #[arg(long, default_value = "")]
        region: String,
    },
    /// ExplainRoute: how a number is read, which tier knows its route, what
    /// is switched off and what admission would decide. No side effects.
    Explain {
        number: String,
        /// ISO 3166-1 alpha-2 region for national-format numbers.
        #[arg(long, default_value = "")]
        region: String,
        /// A caller number, to see whether it is a known customer.
        #[arg(long, default_value = "")]
        caller: String,
    },
    /// EndCall: the call is over (releases its slot, records the outcome).
    EndCall {
        /// The call_id RouteCall returned.
        call_id: String,
        /// Why it ended.
        #[arg(long, value_enum, default_value_t = EndReason::CallerHangup)]
        reason: EndReason,
    },
    /// RecordUsage: meter a call.
    RecordUsage {
        /// The call_id RouteCall returned.
        call_id: String,
        /// `metric=quantity`, repeatable (`--item call_seconds=42`).
        #[arg(long = "item", required = true, value_parser = usage_item)]
        items: Vec<(String, f64)>,
        /// The report's idempotency key (default: a fresh UUID).
        #[arg(long)]
        key: Option<String>,
    },
}

fn usage_item(value: &str) -> Result<(String, f64), String> {
    let (metric, quantity) = value
        .split_once('=')
        .ok_or("expected metric=quantity, e.g. call_seconds=42")?;
    let quantity = quantity
        .parse()
        .map_err(|e| format!("quantity {quantity:?}: {e}"))?;
    Ok((metric.to_string(), quantity))
}
