//! Rendering a boot profile's unattended template (kickstart, cloud-init, ignition) for
//! a host, with minijinja in strict mode: an undefined variable is an error, never an
//! empty string in an installer's answer file.
//!
//! The template sees:
//! - `host`: the [`ResolvedHost`] (name, site, rack, interfaces with addressing, bmc,
//!   storage, kernel_params, labels...); every field is present, null when unset, so
//!   `{% if i.address %}` works under strict undefined;
//! - `site`: the host's site spec plus its `name` (null when the host has none);
//! - `boot`: the boot profile spec plus its `name`.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use super::resolve::ResolvedHost;
use super::schema::{BootProfileSpec, SiteSpec};
use super::{Design, DesignError};

#[derive(Serialize)]
struct Named<'a, T: Serialize> {
    name: &'a str,
    #[serde(flatten)]
    spec: &'a T,
}

#[derive(Serialize)]
struct Context<'a> {
    host: &'a ResolvedHost,
    site: Option<Named<'a, SiteSpec>>,
    boot: Named<'a, BootProfileSpec>,
}

/// The template context for `host` booted with `boot_profile`, as minijinja sees it.
pub fn render_context(
    design: &Design,
    host: &ResolvedHost,
    boot_profile: &str,
) -> Result<minijinja::Value, DesignError> {
    let boot = design
        .boot_profile(boot_profile)
        .ok_or_else(|| DesignError::UnknownBootProfile(boot_profile.to_string()))?;
    let site = host
        .site
        .as_deref()
        .and_then(|s| design.site(s))
        .map(|s| Named {
            name: &s.name,
            spec: &s.spec,
        });
    Ok(minijinja::Value::from_serialize(&Context {
        host,
        site,
        boot: Named {
            name: &boot.name,
            spec: &boot.spec,
        },
    }))
}

/// A strict environment: undefined variables and attributes are errors.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// Renders the unattended template of `host`'s boot profile for that host.
pub fn render_unattended(design: &Design, host: &str) -> Result<String, DesignError> {
    let resolved = design.resolved_host(host)?;
    let profile = resolved
        .boot_profile
        .clone()
        .ok_or_else(|| DesignError::NoBootProfile(host.to_string()))?;
    let boot = design
        .boot_profile(&profile)
        .ok_or_else(|| DesignError::UnknownBootProfile(profile.clone()))?;
    let unattended = boot
        .spec
        .unattended
        .as_ref()
        .ok_or_else(|| DesignError::NoTemplate(profile.clone()))?;
    let err = |e: minijinja::Error| DesignError::Render {
        profile: profile.clone(),
        host: host.to_string(),
        message: describe(&e),
    };
    let env = environment();
    let tmpl = env.template_from_str(&unattended.template).map_err(err)?;
    let ctx = render_context(design, &resolved, &profile)?;
    tmpl.render(ctx).map_err(err)
}

/// A one-line description of a template error, with its line in the template.
pub(crate) fn describe(e: &minijinja::Error) -> String {
    let mut s = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        s.push_str(&format!(" (template line {line})"));
    }
    s
}
