//! Fixtures shared by keygate-control's test binaries.

use keygate_control::keys::CreateKey;

/// A new key named `name` with a generated value, in the plan `plan` (id or name).
pub(crate) fn key_in(name: &str, plan: &str) -> CreateKey {
    CreateKey {
        name: name.into(),
        value: None,
        description: None,
        customer_id: None,
        enabled: true,
        usage_plan: Some(plan.into()),
        expires: None,
    }
}
