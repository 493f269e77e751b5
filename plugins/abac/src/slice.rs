//! Per-(route, method) slices of the policy set.
//!
//! Cedar's authorizer evaluates every policy, about a microsecond each, and
//! one policy file is often shared by many routes. A plugin value serves one
//! route, and the action and resource entities depend only on the route and
//! the method, so the policies whose action or resource scope can never match
//! them are dropped once and the slice is kept. Dropping them changes no
//! decision: a scope that does not match makes the policy not apply before
//! its conditions run, so it can neither permit, forbid nor fail.
//!
//! A slice also knows whether any of its policies reads `context`: when none
//! does, a decision depends only on the entities, and the plugin may keep it
//! with them (see [`crate::entities::EntitySet`]).

use std::cell::RefCell;
use std::collections::HashMap;

use cedar_policy::{ActionConstraint, EntityUid, Policy, PolicySet, ResourceConstraint};
use foldhash::fast::RandomState;

use crate::config::Model;

/// Slices kept at most; beyond that (a client inventing methods) the full
/// set is evaluated instead of growing the cache.
const MAX_SLICES: usize = 64;

/// The policies that can apply to one (route, method).
#[derive(Debug, Clone, Copy)]
pub struct Slice<'a> {
    pub policies: &'a PolicySet,
    /// Whether some of them may read `context` ([`reads_context`]).
    pub reads_context: bool,
}

/// A slice as kept.
#[derive(Debug)]
struct Kept {
    policies: PolicySet,
    reads_context: bool,
}

/// The slices computed so far, by (route, method). Hashed with foldhash:
/// the map is looked up on every request, std's SipHash cost ~1 200
/// instructions a lookup here, and at most [`MAX_SLICES`] keys leave
/// nothing for chosen colliding methods to slow down.
#[derive(Debug, Default)]
pub struct Slices(RefCell<HashMap<(String, String), Kept, RandomState>>);

impl Slices {
    /// Calls `f` with the policies that can apply to `(route, method)`;
    /// `all` is the whole set, with whether it reads the context.
    pub fn with<T>(&self, all: Slice<'_>, model: &Model, key: (String, String), f: impl FnOnce(Slice<'_>) -> T) -> T {
        let Ok(mut cache) = self.0.try_borrow_mut() else { return f(all) };
        if !cache.contains_key(&key) && cache.len() >= MAX_SLICES {
            return f(all);
        }
        let kept = cache.entry(key).or_insert_with_key(|(route, method)| {
            let policies = slice(all.policies, model, route, method);
            Kept { reads_context: reads_context(&policies), policies }
        });
        f(Slice { policies: &kept.policies, reads_context: kept.reads_context })
    }
}

/// Whether some policy in `set` may read `context`: the variable appears in
/// its JSON form (Cedar's EST) as `{"Var": "context"}`. Errs on the side of
/// `true`. Without it a decision is a function of the request's entities.
pub fn reads_context(set: &PolicySet) -> bool {
    fn mentions(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::Object(fields) => {
                fields.iter().any(|(k, v)| (k == "Var" && v == "context") || mentions(v))
            }
            serde_json::Value::Array(items) => items.iter().any(mentions),
            _ => false,
        }
    }
    set.policies().any(|p| p.to_json().map_or(true, |est| mentions(&est)))
}

/// The policies of `all` whose scope can match this action and resource.
pub fn slice(all: &PolicySet, model: &Model, route: &str, method: &str) -> PolicySet {
    let action = model.action_uid(route, method);
    let groups = model.action_parents(method);
    let resource = model.resource_uid(route);
    let mut out = PolicySet::new();
    for policy in all.policies().filter(|p| may_apply(p, &action, groups, &resource)) {
        // Ids are unique in `all`, so adding cannot fail; should it, the
        // slice is merely smaller and `all` still judges effects.
        let _ = out.add(policy.clone());
    }
    out
}

/// Whether the policy's action and resource scope can hold. The action's
/// ancestors are exactly its groups; the resource has none.
fn may_apply(policy: &Policy, action: &EntityUid, groups: &[EntityUid], resource: &EntityUid) -> bool {
    let action_in = |target: &EntityUid| target == action || groups.contains(target);
    let action_ok = match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(target) => target == *action,
        ActionConstraint::In(targets) => targets.iter().any(action_in),
    };
    let resource_ok = match policy.resource_constraint() {
        ResourceConstraint::Any => true,
        ResourceConstraint::Eq(target) | ResourceConstraint::In(target) => target == *resource,
        ResourceConstraint::Is(ty) => ty == resource.type_name().clone(),
        ResourceConstraint::IsIn(ty, target) => ty == resource.type_name().clone() && target == *resource,
    };
    action_ok && resource_ok
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::Config;

    fn ids(policies: &str, config: &str, route: &str, method: &str) -> Vec<String> {
        let all = PolicySet::from_str(policies).expect("parses");
        let config: Config = serde_json::from_str(&format!(r#"{{"policies":"" {config}}}"#)).expect("config parses");
        let model = Model::from_config(&config).expect("config accepted");
        let mut ids: Vec<String> = slice(&all, &model, route, method).policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        ids
    }

    const SET: &str = r#"
        permit(principal, action, resource);
        permit(principal, action == Action::"GET", resource);
        permit(principal, action in Action::"write", resource);
        permit(principal, action in [Action::"DELETE", Action::"read"], resource == Route::"users");
        forbid(principal, action, resource in Route::"orders");
        permit(principal, action, resource is Route);
        permit(principal, action, resource is Other);
        permit(principal, action, resource is Route in Route::"users");
    "#;

    #[test]
    fn only_policies_whose_scope_can_match_are_kept() {
        let all = ["policy0", "policy1", "policy2", "policy3", "policy4", "policy5", "policy6", "policy7"];
        let keep = |ix: &[usize]| ix.iter().map(|i| all[*i].to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(SET, "", "users", "GET"), keep(&[0, 1, 3, 5, 7]));
        assert_eq!(ids(SET, "", "users", "DELETE"), keep(&[0, 2, 3, 5, 7]));
        assert_eq!(ids(SET, "", "orders", "POST"), keep(&[0, 2, 4, 5]));
        assert_eq!(ids(SET, "", "orders", "BREW"), keep(&[0, 4, 5]));
        // Other types and groups: the scope names no entity this route can have.
        assert_eq!(ids(SET, r#","resource_type":"Api","action_groups":{}"#, "users", "GET"), keep(&[0, 1]));
        assert_eq!(ids(SET, r#","action":"route-method""#, "users", "GET"), keep(&[0, 3, 5, 7]));
    }

    #[test]
    fn a_policy_reads_the_context_however_it_names_it() {
        let reads = |text: &str| reads_context(&PolicySet::from_str(text).expect("parses"));
        assert!(reads(r#"permit(principal, action, resource) when { context.hour < 6 };"#));
        assert!(reads(r#"permit(principal, action, resource) unless { context has ip };"#));
        assert!(reads(r#"permit(principal, action, resource) when { context["headers"] == {} };"#));
        assert!(reads(
            r#"permit(principal, action, resource); forbid(principal, action, resource) when { [context].isEmpty() };"#
        ));
        assert!(!reads(r#"permit(principal, action, resource) when { principal.context == "context" };"#));
        assert!(!reads(SET));
    }

    #[test]
    fn the_cache_is_bounded() {
        let all = PolicySet::from_str(SET).expect("parses");
        let config: Config = serde_json::from_str(r#"{"policies":""}"#).expect("config parses");
        let model = Model::from_config(&config).expect("config accepted");
        let slices = Slices::default();
        for i in 0..MAX_SLICES + 10 {
            let whole = Slice { policies: &all, reads_context: false };
            let n = slices.with(whole, &model, ("r".into(), format!("M{i}")), |s| s.policies.policies().count());
            assert_eq!(n, if i < MAX_SLICES { 2 } else { 8 }, "{i}");
        }
        assert_eq!(slices.0.borrow().len(), MAX_SLICES);
    }
}
