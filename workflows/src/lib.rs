//! The design schema and its validation, workflow templates, and the built-in workflow
//! library (YAML an operator can read and copy).

pub mod design;
pub mod template;
pub mod windows;

use lariat_engine::Format;

/// A built-in workflow: an engine definition, or a template compiled to one.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub yaml: &'static str,
    pub template: bool,
}

impl Builtin {
    /// The text to register with the engine, and its format.
    pub fn definition(&self) -> Result<(String, Format), template::ParamError> {
        if self.template {
            Ok((
                template::parse_template(self.yaml)?.definition_json(),
                Format::Json,
            ))
        } else {
            Ok((self.yaml.to_string(), Format::Yaml))
        }
    }
}

/// The provision-shaped chain with no-op actions: the engine benchmark's workload.
pub const PROVISION_NOOP: Builtin = Builtin {
    name: "provision-noop",
    yaml: include_str!("../library/provision-noop.yaml"),
    template: false,
};

/// Reads the power of each target's BMC: what the server's `--power-poll` submits, one
/// run per site at a time, at most `max_parallel` BMCs at once each.
pub const POWER_POLL: Builtin = Builtin {
    name: "power-poll",
    yaml: include_str!("../library/power-poll.yaml"),
    template: false,
};

/// Every built-in workflow.
pub const LIBRARY: &[Builtin] = &[
    PROVISION_NOOP,
    POWER_POLL,
    Builtin {
        name: "provision",
        yaml: include_str!("../library/provision.yaml"),
        template: true,
    },
    Builtin {
        name: "deprovision",
        yaml: include_str!("../library/deprovision.yaml"),
        template: true,
    },
    Builtin {
        name: "power_cycle",
        yaml: include_str!("../library/power_cycle.yaml"),
        template: true,
    },
    Builtin {
        name: "firmware_upgrade",
        yaml: include_str!("../library/firmware_upgrade.yaml"),
        template: true,
    },
];
