//! Uniform Access Control: who (users, groups, organisations, applications) may do what
//! (read, write, append, control) to which data (objects and collections), written by each
//! owner as Cedar policies and validated against one schema.
//!
//! A decision on an object evaluates SecNet's built-in policies together with the policies of
//! that object's owner only, so no owner's policy can reach another owner's data. The default
//! is deny. Built in:
//! - `owner`: owners may do anything to their own data;
//! - `ledger-grant`: nobody but the owner reads without a valid grant on the ledger;
//! - `detector`: nobody but the owner gets through when the access-request detector scores
//!   the request at or above the engine's threshold.
//!
//! Each decision says which policies decided it and the detector's score.

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::str::FromStr as _;

/// The Cedar schema every policy is validated against.
pub const SCHEMA: &str = include_str!("schema.cedarschema");

/// Default detector score (parts per million) from which non-owners are refused.
pub const DEFAULT_RISK_THRESHOLD: u32 = 800_000;

/// What an agent wants to do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read content.
    Read,
    /// Store a new version.
    Write,
    /// Add to a collection or a log.
    Append,
    /// Change policies, delete.
    Control,
}

impl Action {
    /// All actions.
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::Append, Action::Control];

    /// The Cedar action name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Append => "append",
            Action::Control => "control",
        }
    }
}

/// Kinds of agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// A person.
    User,
    /// A set of users.
    Group,
    /// A hospital, an institute, a company.
    Organisation,
    /// A program acting for an organisation.
    Application,
}

impl AgentKind {
    fn type_name(self) -> &'static str {
        match self {
            AgentKind::User => "SecNet::User",
            AgentKind::Group => "SecNet::Group",
            AgentKind::Organisation => "SecNet::Organisation",
            AgentKind::Application => "SecNet::Application",
        }
    }
}

/// An agent reference: its kind and account (hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct AgentRef {
    /// Kind.
    pub kind: AgentKind,
    /// Account id (hex).
    pub account: String,
}

/// The agent making a request, with what it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Agent {
    /// Kind.
    pub kind: AgentKind,
    /// Account id (hex).
    pub account: String,
    /// Display name.
    pub name: String,
    /// Groups and organisations it is a member of (directly).
    pub member_of: Vec<AgentRef>,
}

/// The data a request is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Resource {
    /// The owner's account (hex).
    pub owner: String,
    /// The object's path (`fhir/Condition/123`); its prefixes are its collections.
    pub path: String,
    /// Media type.
    pub media_type: String,
    /// Schema.
    pub schema: String,
}

/// Facts about the request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Facts {
    /// Declared purpose.
    pub purpose: String,
    /// Detector score in parts per million, 0..=1_000_000.
    pub score: u32,
    /// A valid grant for this data is on the ledger.
    pub grant: bool,
    /// Today, in days since the Unix epoch (UTC): consents that end on a date compare it.
    pub day: u32,
}

impl Facts {
    /// The day of `ms` milliseconds since the Unix epoch, for [`Facts::day`].
    pub fn day_of(ms: u64) -> u32 {
        u32::try_from(ms / 86_400_000).unwrap_or(u32::MAX)
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The effect.
    pub effect: Effect,
    /// The policies that decided it: the permits that matched for an allow, the forbids that
    /// matched for a deny (empty when nothing permitted: the default deny).
    pub policies: Vec<String>,
    /// The detector's score the decision saw.
    pub score: u32,
    /// Policies that failed to evaluate (they are skipped, as Cedar specifies).
    pub errors: Vec<String>,
}

impl Decision {
    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

/// A policy set an owner submitted that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Does not parse.
    #[error("policy does not parse: {0}")]
    Parse(String),
    /// Parses, but breaks the schema.
    #[error("policy does not validate against the SecNet schema: {0}")]
    Invalid(String),
    /// Uses an id reserved for built-in policies.
    #[error("policy id {0:?} is reserved for a built-in policy")]
    Reserved(String),
    /// Too long.
    #[error("policy text of {0} bytes; at most {MAX_POLICY_BYTES}")]
    TooLarge(usize),
    /// An internal failure building the request (a bad identifier).
    #[error("cannot evaluate: {0}")]
    Request(String),
}

/// Longest policy text an owner may submit.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

const BUILTIN_IDS: [&str; 3] = ["owner", "ledger-grant", "detector"];

/// An owner's validated policies.
#[derive(Debug, Clone)]
pub struct OwnerPolicies {
    text: String,
    set: PolicySet,
    /// Distinguishes this parse from every other in the process (its clones share it), so
    /// remembered decisions are never reused under other policies.
    generation: u64,
}

static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Most decisions a [`DecisionMemo`] keeps; when full it starts over.
pub const MAX_REMEMBERED_DECISIONS: usize = 65_536;

/// Decisions already made. Evaluating policies is a pure function of the policies, the agent,
/// the action, the resource and the facts, so the same inputs give the same decision; this
/// keeps the result instead of evaluating again. Bounded by [`MAX_REMEMBERED_DECISIONS`].
#[derive(Debug, Default)]
pub struct DecisionMemo {
    decisions: std::collections::HashMap<(u64, Agent, Action, Resource, Facts), Decision>,
}

impl DecisionMemo {
    /// An empty memo.
    pub fn new() -> DecisionMemo {
        DecisionMemo::default()
    }

    /// Decisions remembered.
    pub fn len(&self) -> usize {
        self.decisions.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }
}

impl OwnerPolicies {
    /// No policies: only the built-ins apply, so only the owner gets in.
    pub fn empty() -> OwnerPolicies {
        OwnerPolicies {
            text: String::new(),
            set: PolicySet::new(),
            generation: 0,
        }
    }

    /// The text as submitted.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The policies' ids, in order.
    pub fn ids(&self) -> Vec<String> {
        self.set.policies().map(|p| p.id().to_string()).collect()
    }
}

/// `text` with the policy whose `@id` is `id` left out and `replacement` (the text of
/// policies to add) appended: how an application changes one of an owner's policies without
/// touching the others. Each kept policy is written back as Cedar prints it, in the order
/// written; the result still has to pass [`Engine::check`].
pub fn with_policy_replaced(
    text: &str,
    id: &str,
    replacement: Option<&str>,
) -> Result<String, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge(text.len()));
    }
    let mut out = String::new();
    if !text.trim().is_empty() {
        let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        // The set keeps the order policies were written in, and prints each as written.
        for p in parsed.policies().filter(|p| p.annotation("id") != Some(id)) {
            out.push_str(p.to_string().trim_end());
            out.push('\n');
        }
    }
    if let Some(r) = replacement {
        out.push_str(r.trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// Evaluates requests against the built-in and owners' policies.
#[derive(Debug)]
pub struct Engine {
    schema: Schema,
    builtin: PolicySet,
    authorizer: Authorizer,
    threshold: u32,
}

fn builtin_text(threshold: u32) -> String {
    format!(
        r#"
@id("owner")
permit (principal, action, resource)
when {{ principal has account && principal.account == resource.owner }};

@id("ledger-grant")
forbid (principal, action == SecNet::Action::"read", resource)
unless {{ (principal has account && principal.account == resource.owner) || context.grant }};

@id("detector")
forbid (principal, action, resource)
when {{ context.score >= {threshold} }}
unless {{ principal has account && principal.account == resource.owner }};
"#
    )
}

/// The same policies, each identified by its `@id` annotation, or `policy0`, `policy1`, … in
/// order. With `reserve`, the built-in ids are refused.
fn named(parsed: &PolicySet, reserve: bool) -> Result<PolicySet, PolicyError> {
    let mut set = PolicySet::new();
    let mut used = HashSet::new();
    for (i, p) in parsed.policies().enumerate() {
        let id = p
            .annotation("id")
            .map_or_else(|| format!("policy{i}"), str::to_string);
        if reserve && BUILTIN_IDS.contains(&id.as_str()) {
            return Err(PolicyError::Reserved(id));
        }
        if !used.insert(id.clone()) {
            return Err(PolicyError::Parse(format!("two policies are named {id:?}")));
        }
        set.add(p.new_id(cedar_policy::PolicyId::new(id)))
            .map_err(|e| PolicyError::Parse(e.to_string()))?;
    }
    Ok(set)
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let t = EntityTypeName::from_str(type_name).map_err(|e| PolicyError::Request(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_string())
}

/// The collections an object path is in, innermost first: `a/b/c` → `a/b`, `a`.
pub fn collections(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        out.push(parent.to_string());
        p = parent;
    }
    out
}

impl Engine {
    /// An engine refusing non-owners from detector score `threshold` (parts per million) upward.
    pub fn new(threshold: u32) -> Result<Engine, PolicyError> {
        let schema = Schema::from_cedarschema_str(SCHEMA)
            .map_err(|e| PolicyError::Invalid(e.to_string()))?
            .0;
        let builtin = named(
            &PolicySet::from_str(&builtin_text(threshold))
                .map_err(|e| PolicyError::Parse(e.to_string()))?,
            false,
        )?;
        let engine = Engine {
            schema,
            builtin,
            authorizer: Authorizer::new(),
            threshold,
        };
        engine.validate(&engine.builtin)?;
        Ok(engine)
    }

    /// The detector threshold.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// The built-in policies, as text.
    pub fn builtin_text(&self) -> String {
        builtin_text(self.threshold)
    }

    fn validate(&self, set: &PolicySet) -> Result<(), PolicyError> {
        let result = Validator::new(self.schema.clone()).validate(set, ValidationMode::Strict);
        if result.validation_passed() {
            Ok(())
        } else {
            let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            Err(PolicyError::Invalid(errors.join("; ")))
        }
    }

    /// Parses and validates an owner's policy text. Policies without an `@id` annotation are
    /// named `policy0`, `policy1`, … in order.
    pub fn check(&self, text: &str) -> Result<OwnerPolicies, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge(text.len()));
        }
        let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        if parsed.templates().next().is_some() {
            return Err(PolicyError::Parse("templates are not supported".into()));
        }
        let set = named(&parsed, true)?;
        self.validate(&set)?;
        Ok(OwnerPolicies {
            text: text.to_string(),
            set,
            generation: next_generation(),
        })
    }

    /// [`Engine::decide`], answered from `memo` when the same question was decided before
    /// under the same policies.
    pub fn decide_remembered(
        &self,
        memo: &mut DecisionMemo,
        owner: &OwnerPolicies,
        agent: &Agent,
        action: Action,
        resource: &Resource,
        facts: &Facts,
    ) -> Result<Decision, PolicyError> {
        let key = (
            owner.generation,
            agent.clone(),
            action,
            resource.clone(),
            facts.clone(),
        );
        if let Some(d) = memo.decisions.get(&key) {
            return Ok(d.clone());
        }
        let decision = self.decide(owner, agent, action, resource, facts)?;
        if memo.decisions.len() >= MAX_REMEMBERED_DECISIONS {
            memo.decisions.clear();
        }
        memo.decisions.insert(key, decision.clone());
        Ok(decision)
    }

    /// Decides whether `agent` may do `action` on `resource`, under the built-in policies and
    /// `owner`'s (which must be the policies of `resource.owner`).
    pub fn decide(
        &self,
        owner: &OwnerPolicies,
        agent: &Agent,
        action: Action,
        resource: &Resource,
        facts: &Facts,
    ) -> Result<Decision, PolicyError> {
        let principal = uid(agent.kind.type_name(), &agent.account)?;
        let mut entities = Vec::new();
        let mut parents = HashSet::new();
        for m in &agent.member_of {
            let p = uid(m.kind.type_name(), &m.account)?;
            parents.insert(p.clone());
            let attrs = HashMap::from([
                ("account".to_string(), string(&m.account)),
                ("name".to_string(), string("")),
            ]);
            entities.push(
                Entity::new(p, attrs, HashSet::new())
                    .map_err(|e| PolicyError::Request(e.to_string()))?,
            );
        }
        let attrs = HashMap::from([
            ("account".to_string(), string(&agent.account)),
            ("name".to_string(), string(&agent.name)),
        ]);
        entities.push(
            Entity::new(principal.clone(), attrs, parents)
                .map_err(|e| PolicyError::Request(e.to_string()))?,
        );

        let chain = collections(&resource.path);
        for (i, c) in chain.iter().enumerate() {
            let parents: HashSet<EntityUid> = match chain.get(i + 1) {
                Some(up) => HashSet::from([uid("SecNet::Collection", up)?]),
                None => HashSet::new(),
            };
            let attrs = HashMap::from([("owner".to_string(), string(&resource.owner))]);
            entities.push(
                Entity::new(uid("SecNet::Collection", c)?, attrs, parents)
                    .map_err(|e| PolicyError::Request(e.to_string()))?,
            );
        }
        let object = uid("SecNet::Object", &resource.path)?;
        let attrs = HashMap::from([
            ("owner".to_string(), string(&resource.owner)),
            ("media_type".to_string(), string(&resource.media_type)),
            ("schema".to_string(), string(&resource.schema)),
        ]);
        let parents = match chain.first() {
            Some(c) => HashSet::from([uid("SecNet::Collection", c)?]),
            None => HashSet::new(),
        };
        entities.push(
            Entity::new(object.clone(), attrs, parents)
                .map_err(|e| PolicyError::Request(e.to_string()))?,
        );
        // The entities are built here from typed values, so they conform to the schema by
        // construction; the request itself is checked against the schema below.
        let entities = Entities::from_entities(entities, None)
            .map_err(|e| PolicyError::Request(e.to_string()))?;

        let action_uid = uid("SecNet::Action", action.as_str())?;
        let context = Context::from_pairs([
            ("purpose".to_string(), string(&facts.purpose)),
            (
                "score".to_string(),
                RestrictedExpression::new_long(i64::from(facts.score)),
            ),
            (
                "grant".to_string(),
                RestrictedExpression::new_bool(facts.grant),
            ),
            (
                "day".to_string(),
                RestrictedExpression::new_long(i64::from(facts.day)),
            ),
        ])
        .map_err(|e| PolicyError::Request(e.to_string()))?;
        let request = Request::new(principal, action_uid, object, context, Some(&self.schema))
            .map_err(|e| PolicyError::Request(e.to_string()))?;

        let mut set = self.builtin.clone();
        for p in owner.set.policies() {
            set.add(p.clone())
                .map_err(|e| PolicyError::Request(e.to_string()))?;
        }
        let response = self.authorizer.is_authorized(&request, &set, &entities);
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        policies.sort();
        let errors = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        let effect = match response.decision() {
            cedar_policy::Decision::Allow => Effect::Allow,
            cedar_policy::Decision::Deny => Effect::Deny,
        };
        Ok(Decision {
            effect,
            policies,
            score: facts.score,
            errors,
        })
    }
}
