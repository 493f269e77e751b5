//! `abac`: attribute-based authorization with Cedar. Every request on the
//! route becomes a Cedar request — the principal from the JWT claims an
//! earlier plugin verified, the method as the action, the route as the
//! resource, the client and the clock as the context — and is evaluated
//! against a policy set parsed once, when the config is loaded. Allowed
//! requests go on; denied ones get a 403.

mod config;
mod entities;
mod policies;
mod slice;
#[cfg(test)]
mod tests;

use std::rc::Rc;

use cedar_policy::{Authorizer, Effect, PolicyId, PolicySet};
use wasmgate_sdk::prelude::*;

use crate::config::Model;
pub use crate::config::{ActionId, Anonymous, Config};
use crate::entities::{EntitySets, Facts, Memo, Principals, Refusal};
use crate::slice::{Slice, Slices};

/// The header that says why a request was denied, with `debug = true`.
pub const REASON_HEADER: &str = "x-abac-reason";

/// The plugin: the entity model, the parsed policies and the authorizer.
#[derive(Debug)]
pub struct Abac {
    model: Model,
    policies: PolicySet,
    /// Whether some policy of the whole set reads `context`.
    reads_context: bool,
    /// `policies` cut down per (route, method), computed on first use.
    slices: Slices,
    /// Principal entities by claims text, built on first use.
    principals: Principals,
    /// Entity sets by principal, route, method, path and captures.
    sets: EntitySets,
    authorizer: Authorizer,
    debug: bool,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Denied, with what decided it: the forbidding policies' ids, "no policy
    /// permits", or why no Cedar request could be built.
    Deny(String),
}

impl Plugin for Abac {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let mut model = Model::from_config(&config)?;
        let policies = policies::load(&config.policies, config.schema.as_deref())?;
        model.context_ip = policies::mention(&policies, "ip");
        model.context_client_cert = policies::mention(&policies, "client_cert");
        Ok(Self {
            model,
            reads_context: slice::reads_context(&policies),
            policies,
            slices: Slices::default(),
            principals: Memo::new(entities::MAX_PRINCIPALS, entities::MAX_CLAIMS),
            sets: Memo::on_repeat(entities::MAX_SETS, entities::MAX_SET_KEY),
            authorizer: Authorizer::new(),
            debug: config.debug,
        })
    }

    /// With policies that read no `context` (no client address, time or
    /// headers), the verdict is a function of the claims, method, path and
    /// resource captures: the gateway keeps it per their values, so a
    /// repeated request does not call the plugin.
    fn depends_on(&self) -> Option<Vec<RequestFact>> {
        if self.reads_context {
            return None;
        }
        let mut facts =
            vec![RequestFact::Context(self.model.claims_key.clone()), RequestFact::Method, RequestFact::Path];
        facts.extend(self.model.resource_params.iter().cloned().map(RequestFact::PathParam));
        Some(facts)
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        match self.decide(req) {
            Verdict::Allow => Decision::Continue,
            Verdict::Deny(reason) => {
                if log::enabled(log::Level::Debug) {
                    log::debug(&format!("denied {} {}: {reason}", req.method(), req.path()));
                }
                let mut reply = Reply::json(403, &serde_json::json!({ "error": "forbidden" }));
                if self.debug {
                    reply = reply.header(REASON_HEADER, header_safe(&reason));
                }
                Decision::respond(reply)
            }
        }
    }
}

impl Abac {
    /// Builds the Cedar request for `req` and evaluates it against the
    /// policies that can apply to its route and method.
    pub fn decide(&self, req: &Request<'_>) -> Verdict {
        let claims = context::get(&self.model.claims_key);
        if claims.is_none() && self.model.anonymous == Anonymous::Deny {
            return Verdict::Deny(format!("no claims in `{}`", self.model.claims_key));
        }
        let facts = Facts::gather(&self.model, req);
        let kept = self.slices.get(&self.policies, &self.model, &facts.route, &facts.method);
        let all = Slice { policies: &self.policies, reads_context: self.reads_context };
        let slice = kept.as_deref().map_or(all, slice::Kept::slice);
        self.decide_on(slice, req, claims.as_deref(), facts)
    }

    /// [`Abac::decide`] on the route's slice — or, when none of its
    /// policies reads the context, the verdict kept with a remembered entity
    /// set.
    fn decide_on(&self, slice: Slice<'_>, req: &Request<'_>, claims: Option<&str>, mut facts: Facts) -> Verdict {
        let key = entities::set_key(claims, &facts);
        let set = self.sets.get_or_build(&key, || {
            let principal = match claims {
                None => self.model.anonymous(),
                Some(text) => self
                    .principals
                    .get_or_build(text, || self.model.principal(&entities::parse_claims(&self.model, text)?))?,
            };
            self.model.entity_set(&facts, principal).map(Rc::new)
        });
        if !slice.reads_context
            && let Ok(set) = &set
            && let Some(verdict) = set.verdict.get()
        {
            return verdict.clone();
        }
        if slice.reads_context {
            facts.gather_context(&self.model, req);
        }
        let built = match set.and_then(|set| self.model.request_with(set, &facts, claims.is_some())) {
            Ok(built) => built,
            Err(Refusal(reason)) => {
                log::warn(&reason);
                return Verdict::Deny(reason);
            }
        };
        let response = self.authorizer.is_authorized(&built.request, slice.policies, built.entities());
        let verdict = self.judge(&response);
        if !slice.reads_context && response.diagnostics().errors().next().is_none() {
            let _ = built.set.verdict.set(verdict.clone());
        }
        verdict
    }

    /// Cedar's decision, made fail-closed: a policy that fails to evaluate
    /// counts as denying. An erring `permit` permits nothing (as in Cedar);
    /// an erring `forbid` forbids (Cedar would skip it).
    fn judge(&self, response: &cedar_policy::Response) -> Verdict {
        let mut failed_forbids: Vec<&PolicyId> = Vec::new();
        let mut failed = Vec::new();
        for cedar_policy::AuthorizationError::PolicyEvaluationError(e) in response.diagnostics().errors() {
            let id = e.policy_id();
            let forbid = self.policies.policy(id).is_some_and(|p| p.effect() == Effect::Forbid);
            log::warn(&format!("policy `{id}` failed to evaluate and counts as denying: {}", e.inner()));
            if forbid {
                failed_forbids.push(id);
            }
            failed.push(id);
        }
        if !failed_forbids.is_empty() {
            return Verdict::Deny(format!("{} (error)", join(failed_forbids)));
        }
        match response.decision() {
            cedar_policy::Decision::Allow => Verdict::Allow,
            cedar_policy::Decision::Deny => {
                let forbids: Vec<&PolicyId> = response.diagnostics().reason().collect();
                if !forbids.is_empty() {
                    Verdict::Deny(join(forbids))
                } else if failed.is_empty() {
                    Verdict::Deny("no policy permits".to_owned())
                } else {
                    Verdict::Deny(format!("no policy permits ({} failed)", join(failed)))
                }
            }
        }
    }
}

/// Policy ids, sorted, comma-separated.
fn join(ids: Vec<&PolicyId>) -> String {
    let mut ids: Vec<String> = ids.into_iter().map(ToString::to_string).collect();
    ids.sort();
    ids.join(", ")
}

/// A header value cannot hold control characters; ids and reasons rarely
/// do, but a reply the gateway refuses would be a 500.
fn header_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

export_plugin!(Abac, config_schema = "config.schema.json");
