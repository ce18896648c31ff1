//! The built-in workflow library, as YAML an operator can read and copy.
//!
//! Still to come here (design issue): the design schema (sites, networks, profiles with
//! inheritance, hosts, BMCs, boot profiles), its validation, and templates compiled per
//! host into engine DAGs.

/// A built-in workflow definition.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub yaml: &'static str,
}

/// The provision-shaped chain with no-op actions: the engine benchmark's workload.
pub const PROVISION_NOOP: Builtin = Builtin {
    name: "provision-noop",
    yaml: include_str!("../library/provision-noop.yaml"),
};

/// Every built-in workflow.
pub const LIBRARY: &[Builtin] = &[PROVISION_NOOP];

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_validates_against_the_builtin_actions() {
        let mut actions = lariat_engine::Actions::new();
        lariat_steps::register_builtin(&mut actions);
        for b in super::LIBRARY {
            let wf =
                lariat_engine::model::compile(b.yaml, lariat_engine::Format::Yaml, 1, &actions)
                    .unwrap_or_else(|e| panic!("{}: {e}", b.name));
            assert_eq!(wf.name, b.name);
        }
    }
}
