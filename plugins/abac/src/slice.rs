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

use std::cell::{Ref, RefCell};
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
pub struct Kept {
    policies: PolicySet,
    reads_context: bool,
}

impl Kept {
    pub fn slice(&self) -> Slice<'_> {
        Slice { policies: &self.policies, reads_context: self.reads_context }
    }
}

/// The slices computed so far, by route, then method. Hashed with
/// foldhash: the map is looked up on every request, std's SipHash cost
/// ~1 200 instructions a lookup here, and at most [`MAX_SLICES`] keys leave
/// nothing for chosen colliding methods to slow down. Looked up by `&str`,
/// so a request's route and method are not copied to find their slice.
#[derive(Debug, Default)]
pub struct Slices(RefCell<Map>);

type Map = HashMap<String, HashMap<String, Kept, RandomState>, RandomState>;

impl Slices {
    /// The policies that can apply to `(route, method)`, from `all`; `None`
    /// when no slice can be kept (the cache is full), and the whole set applies.
    pub fn get<'s>(&'s self, all: &PolicySet, model: &Model, route: &str, method: &str) -> Option<Ref<'s, Kept>> {
        let find = |cache| Ref::filter_map(cache, |c: &Map| c.get(route)?.get(method)).ok();
        if let Some(kept) = self.0.try_borrow().ok().and_then(find) {
            return Some(kept);
        }
        {
            let mut cache = self.0.try_borrow_mut().ok()?;
            if cache.values().map(HashMap::len).sum::<usize>() >= MAX_SLICES {
                return None;
            }
            let policies = slice(all, model, route, method);
            let kept = Kept { reads_context: reads_context(&policies), policies };
            cache.entry(route.to_owned()).or_default().insert(method.to_owned(), kept);
        }
        self.0.try_borrow().ok().and_then(find)
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
            // Across two routes: the bound is on slices, not per route.
            let (route, method) = (if i % 2 == 0 { "r" } else { "s" }, format!("M{i}"));
            let kept = slices.get(&all, &model, route, &method);
            assert_eq!(kept.map(|k| k.slice().policies.policies().count()), (i < MAX_SLICES).then_some(2), "{i}");
        }
        assert_eq!(slices.0.borrow().values().map(HashMap::len).sum::<usize>(), MAX_SLICES);
        let again = slices.get(&all, &model, "r", "M0");
        assert_eq!(again.map(|k| k.slice().policies.policies().count()), Some(2), "a kept slice is found again");
    }
}
