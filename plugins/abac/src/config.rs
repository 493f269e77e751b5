//! The route's `config` table as written, and the checks that turn it into
//! the [`Model`] the request path uses: entity type names parsed, header and
//! parameter names validated, action groups inverted into a method lookup.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use wasmgate_sdk::ConfigError;
use wasmgate_sdk::is_token;

/// The route's `config` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Cedar policy text, inline or from `config_files = { policies = "..." }`.
    pub(crate) policies: String,
    /// Cedar schema (Cedar syntax, or JSON when it starts with `{`): when
    /// given, the policies are validated against it at load.
    #[serde(default)]
    pub(crate) schema: Option<String>,
    /// The context key the jwt plugin leaves its verified claims under.
    #[serde(default = "default_claims_key")]
    claims_key: String,
    /// The entity type of the principal.
    #[serde(default = "default_principal_type")]
    principal_type: String,
    /// The claim that names the principal (an integer is used as its decimal text).
    #[serde(default = "default_principal_id_claim")]
    principal_id_claim: String,
    /// A claim (string or array of strings) whose values become the
    /// principal's parents, so policies can say `principal in Group::"ops"`.
    #[serde(default)]
    group_claim: Option<String>,
    /// The entity type of the principal's parents from `group_claim`.
    #[serde(default = "default_group_type")]
    group_type: String,
    /// What happens without claims in the context.
    #[serde(default)]
    anonymous: Anonymous,
    /// How the action id is formed.
    #[serde(default)]
    action: ActionId,
    /// The entity type of the action: `Action`, or a namespaced `App::Action`.
    #[serde(default = "default_action_type")]
    action_type: String,
    /// Group name → methods; the action is `in` each group that lists its method.
    #[serde(default = "default_action_groups")]
    action_groups: BTreeMap<String, Vec<String>>,
    /// The entity type of the resource (the route).
    #[serde(default = "default_resource_type")]
    resource_type: String,
    /// Route captures (`{id}`) exposed as resource attributes.
    #[serde(default)]
    resource_params: Vec<String>,
    /// Request headers exposed as `context.headers["name"]`.
    #[serde(default)]
    context_headers: Vec<String>,
    /// Say why in an `x-abac-reason` header on denials.
    #[serde(default)]
    pub(crate) debug: bool,
}

/// `anonymous`: what a request without claims gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Anonymous {
    /// 403 without evaluating any policy.
    #[default]
    Deny,
    /// Evaluate with the principal `Anonymous::"anonymous"`.
    Evaluate,
}

/// `action`: how the action entity's id is formed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ActionId {
    /// `Action::"GET"`.
    #[default]
    Method,
    /// `Action::"<route>:GET"`.
    RouteMethod,
}

fn default_claims_key() -> String {
    "jwt.claims".to_owned()
}

fn default_principal_type() -> String {
    "User".to_owned()
}

fn default_principal_id_claim() -> String {
    "sub".to_owned()
}

fn default_group_type() -> String {
    "Group".to_owned()
}

fn default_action_type() -> String {
    "Action".to_owned()
}

fn default_resource_type() -> String {
    "Route".to_owned()
}

fn default_action_groups() -> BTreeMap<String, Vec<String>> {
    let group = |methods: &[&str]| methods.iter().map(|m| (*m).to_owned()).collect();
    BTreeMap::from([
        ("read".to_owned(), group(&["GET", "HEAD", "OPTIONS"])),
        ("write".to_owned(), group(&["POST", "PUT", "PATCH", "DELETE"])),
    ])
}

/// The principal type used when `anonymous = "evaluate"` and there are no claims.
pub const ANONYMOUS_TYPE: &str = "Anonymous";

/// Everything the request path needs to build a Cedar request, checked.
#[derive(Debug)]
pub struct Model {
    pub claims_key: String,
    pub principal_type: EntityTypeName,
    pub principal_id_claim: String,
    pub group_claim: Option<String>,
    pub group_type: EntityTypeName,
    pub anonymous: Anonymous,
    pub anonymous_uid: EntityUid,
    pub action: ActionId,
    pub action_type: EntityTypeName,
    /// Method → the group entities its action is in.
    pub action_parents: HashMap<String, Vec<EntityUid>>,
    pub resource_type: EntityTypeName,
    pub resource_params: Vec<String>,
    pub context_headers: Vec<String>,
    /// Whether the context carries `ip`, an `ipaddr` extension value that
    /// costs more to build than the rest of the context together: only when
    /// some policy mentions `ip` (see [`crate::policies::mention`]).
    pub context_ip: bool,
    /// Whether the context carries `client_cert` (a host call a request):
    /// only when some policy mentions it.
    pub context_client_cert: bool,
}

impl Model {
    /// Checks every key but `policies`, `schema` and `debug`.
    pub fn from_config(c: &Config) -> Result<Self, ConfigError> {
        if c.claims_key.is_empty() {
            return Err("`claims_key` must not be empty; the default is \"jwt.claims\"".into());
        }
        if c.principal_id_claim.is_empty() {
            return Err("`principal_id_claim` must not be empty; the default is \"sub\"".into());
        }
        if c.group_claim.as_deref() == Some("") {
            return Err("`group_claim` must not be empty: name a claim such as \"groups\", or leave it out".into());
        }
        let action_type = type_name("action_type", &c.action_type)?;
        if action_type.basename() != "Action" {
            return Err(format!(
                "`action_type` is `{}`: Cedar requires action entities to be of type `Action` (or `Namespace::Action`)",
                c.action_type
            )
            .into());
        }
        let mut action_parents: HashMap<String, Vec<EntityUid>> = HashMap::new();
        for (group, methods) in &c.action_groups {
            if group.is_empty() {
                return Err("`action_groups` has a group with an empty name".into());
            }
            let uid = EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(group));
            for method in methods {
                if !is_token(method) {
                    return Err(format!("`action_groups.{group}`: `{method}` is not an HTTP method").into());
                }
                action_parents.entry(method.to_ascii_uppercase()).or_default().push(uid.clone());
            }
        }
        for param in &c.resource_params {
            let ident = !param.is_empty() && param.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ident {
                return Err(format!(
                    "`resource_params`: `{param}` is not a capture name; use the name inside `{{}}` in the route's path"
                )
                .into());
            }
            if param == "path" {
                return Err("`resource_params` cannot list `path`: the resource already has a `path` attribute".into());
            }
        }
        let mut context_headers = Vec::with_capacity(c.context_headers.len());
        for name in &c.context_headers {
            if !is_token(name) {
                return Err(format!("`context_headers`: `{name}` is not a valid header name").into());
            }
            context_headers.push(name.to_ascii_lowercase());
        }
        Ok(Self {
            claims_key: c.claims_key.clone(),
            principal_type: type_name("principal_type", &c.principal_type)?,
            principal_id_claim: c.principal_id_claim.clone(),
            group_claim: c.group_claim.clone(),
            group_type: type_name("group_type", &c.group_type)?,
            anonymous: c.anonymous,
            anonymous_uid: EntityUid::from_type_name_and_id(
                type_name("anonymous", ANONYMOUS_TYPE)?,
                EntityId::new("anonymous"),
            ),
            action: c.action,
            action_type,
            action_parents,
            resource_type: type_name("resource_type", &c.resource_type)?,
            resource_params: c.resource_params.clone(),
            context_headers,
            context_ip: true,
            context_client_cert: true,
        })
    }
}

fn type_name(key: &str, text: &str) -> Result<EntityTypeName, ConfigError> {
    EntityTypeName::from_str(text).map_err(|_| {
        ConfigError::new(format!(
            "`{key}` is `{text}`, not a Cedar entity type name; use an identifier such as \"User\" or \"App::User\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(json: &str) -> Result<Model, String> {
        let c: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Model::from_config(&c).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let m = model(r#"{"policies":""}"#).expect("accepted");
        assert_eq!(m.claims_key, "jwt.claims");
        assert_eq!(m.principal_type.to_string(), "User");
        assert_eq!(m.principal_id_claim, "sub");
        assert_eq!(m.anonymous, Anonymous::Deny);
        assert_eq!(m.action, ActionId::Method);
        assert_eq!(m.resource_type.to_string(), "Route");
        let parents = |method: &str| -> Vec<String> {
            m.action_parents.get(method).into_iter().flatten().map(ToString::to_string).collect()
        };
        assert_eq!(parents("GET"), vec![r#"Action::"read""#]);
        assert_eq!(parents("DELETE"), vec![r#"Action::"write""#]);
        assert!(parents("TRACE").is_empty());
    }

    #[test]
    fn custom_groups_replace_the_defaults_and_methods_are_uppercased() {
        let m = model(r#"{"policies":"","action_groups":{"safe":["get"],"any":["get","post"]}}"#).expect("accepted");
        let mut get: Vec<String> = m.action_parents["GET"].iter().map(ToString::to_string).collect();
        get.sort();
        assert_eq!(get, vec![r#"Action::"any""#, r#"Action::"safe""#]);
        assert!(!m.action_parents.contains_key("DELETE"));
    }

    #[test]
    fn bad_keys_are_refused_with_the_fix() {
        let err = |json: &str| model(json).err().unwrap_or_default();
        assert!(err(r#"{"policies":"","principal_type":"not a type"}"#).contains("not a Cedar entity type name"));
        assert!(err(r#"{"policies":"","action_type":"Verb"}"#).contains("of type `Action`"));
        assert!(err(r#"{"policies":"","resource_params":["a-b"]}"#).contains("not a capture name"));
        assert!(err(r#"{"policies":"","resource_params":["path"]}"#).contains("already has a `path`"));
        assert!(err(r#"{"policies":"","context_headers":["x tenant"]}"#).contains("not a valid header name"));
        assert!(err(r#"{"policies":"","action_groups":{"r":["G ET"]}}"#).contains("not an HTTP method"));
        assert!(err(r#"{"policies":"","anonymous":"allow"}"#).contains("unknown variant `allow`"));
        assert!(err(r#"{"policies":"","actoin":"method"}"#).contains("unknown field `actoin`"));
        assert!(err(r#"{"policies":"","claims_key":""}"#).contains("must not be empty"));
        assert!(err("{}").contains("missing field `policies`"));
    }

    #[test]
    fn namespaced_types_are_accepted() {
        let m = model(r#"{"policies":"","principal_type":"App::User","action_type":"App::Action"}"#).expect("ok");
        assert_eq!(m.principal_type.to_string(), "App::User");
        assert_eq!(m.action_parents["GET"][0].to_string(), r#"App::Action::"read""#);
    }
}
