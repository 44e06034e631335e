//! Cedar decisions against a reference model: random owner policies from a small grammar and
//! random requests; the engine and a direct evaluation of the grammar must agree on every
//! request, including the built-in owner, ledger-grant and detector rules.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

use proptest::prelude::*;
use secnet_policy::{
    Action, Agent, AgentKind, AgentRef, DecisionMemo, Engine, Facts, PolicyError, Resource,
};

const OWNER: &str = "aa00";
const USERS: [&str; 3] = ["bb01", "bb02", "bb03"];
const ORG: &str = "cc01";
const OBJECTS: [&str; 3] = ["fhir/Condition/1", "fhir/Observation/2", "notes/3"];
const PURPOSES: [&str; 2] = ["treatment", "research"];
const THRESHOLD: u32 = 800_000;

fn engine() -> Engine {
    Engine::new(THRESHOLD).unwrap()
}

/// The agent behind request principal `i`: the owner, three users (the first two members of
/// the hospital organisation), or the organisation itself.
fn agent(i: usize) -> Agent {
    let (kind, account, member_of) = match i {
        0 => (AgentKind::User, OWNER, vec![]),
        1 | 2 => (
            AgentKind::User,
            USERS[i - 1],
            vec![AgentRef {
                kind: AgentKind::Organisation,
                account: ORG.into(),
            }],
        ),
        3 => (AgentKind::User, USERS[2], vec![]),
        _ => (AgentKind::Organisation, ORG, vec![]),
    };
    Agent {
        kind,
        account: account.into(),
        name: String::new(),
        member_of,
    }
}

fn resource(j: usize) -> Resource {
    Resource {
        owner: OWNER.into(),
        path: OBJECTS[j].into(),
        media_type: "application/fhir+json".into(),
        schema: String::new(),
    }
}

#[derive(Debug, Clone)]
enum Who {
    Anyone,
    User(usize),
    InOrg,
}

#[derive(Debug, Clone)]
enum What {
    Anything,
    Object(usize),
    InCollection(&'static str),
}

#[derive(Debug, Clone)]
struct Spec {
    permit: bool,
    who: Who,
    actions: Vec<Action>,
    what: What,
    purpose: Option<usize>,
}

impl Spec {
    fn text(&self) -> String {
        let principal = match &self.who {
            Who::Anyone => "principal".to_string(),
            Who::User(u) => format!("principal == SecNet::User::\"{}\"", USERS[*u]),
            Who::InOrg => format!("principal in SecNet::Organisation::\"{ORG}\""),
        };
        let actions: Vec<String> = self
            .actions
            .iter()
            .map(|a| format!("SecNet::Action::\"{}\"", a.as_str()))
            .collect();
        let resource = match &self.what {
            What::Anything => "resource".to_string(),
            What::Object(j) => format!("resource == SecNet::Object::\"{}\"", OBJECTS[*j]),
            What::InCollection(c) => format!("resource in SecNet::Collection::\"{c}\""),
        };
        let when = self
            .purpose
            .map(|p| format!(" when {{ context.purpose == \"{}\" }}", PURPOSES[p]))
            .unwrap_or_default();
        format!(
            "{} ({principal}, action in [{}], {resource}){when};\n",
            if self.permit { "permit" } else { "forbid" },
            actions.join(", ")
        )
    }

    fn matches(&self, who: usize, action: Action, what: usize, purpose: usize) -> bool {
        let a = agent(who);
        let who_ok = match &self.who {
            Who::Anyone => true,
            Who::User(u) => a.kind == AgentKind::User && a.account == USERS[*u],
            Who::InOrg => a.account == ORG || a.member_of.iter().any(|m| m.account == ORG),
        };
        let what_ok = match &self.what {
            What::Anything => true,
            What::Object(j) => *j == what,
            What::InCollection(c) => OBJECTS[what].starts_with(&format!("{c}/")),
        };
        who_ok
            && self.actions.contains(&action)
            && what_ok
            && self.purpose.is_none_or(|p| p == purpose)
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        prop_oneof![
            Just(Who::Anyone),
            (0usize..3).prop_map(Who::User),
            Just(Who::InOrg)
        ],
        proptest::sample::subsequence(Action::ALL.to_vec(), 1..=4),
        prop_oneof![
            Just(What::Anything),
            (0usize..3).prop_map(What::Object),
            proptest::sample::select(vec!["fhir", "fhir/Condition", "notes"])
                .prop_map(What::InCollection),
        ],
        proptest::option::of(0usize..2),
    )
        .prop_map(|(permit, who, actions, what, purpose)| Spec {
            permit,
            who,
            actions,
            what,
            purpose,
        })
}

/// The reference decision: owners may do anything; otherwise a read needs a grant, a high
/// score refuses, a matching forbid refuses, and a matching permit is needed.
fn reference(
    specs: &[Spec],
    who: usize,
    action: Action,
    what: usize,
    purpose: usize,
    score: u32,
    grant: bool,
) -> bool {
    if who == 0 {
        return !specs
            .iter()
            .any(|s| !s.permit && s.matches(who, action, what, purpose));
    }
    if action == Action::Read && !grant {
        return false;
    }
    if score >= THRESHOLD {
        return false;
    }
    let forbidden = specs
        .iter()
        .any(|s| !s.permit && s.matches(who, action, what, purpose));
    let permitted = specs
        .iter()
        .any(|s| s.permit && s.matches(who, action, what, purpose));
    permitted && !forbidden
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn cedar_agrees_with_the_reference_model(
        specs in proptest::collection::vec(spec(), 0..5),
        requests in proptest::collection::vec(
            (0usize..5, proptest::sample::select(Action::ALL.to_vec()), 0usize..3, 0usize..2, prop_oneof![Just(0u32), Just(799_999u32), Just(800_000u32), 0u32..=1_000_000], any::<bool>()),
            1..24,
        ),
    ) {
        let engine = engine();
        let text: String = specs.iter().map(Spec::text).collect();
        let policies = engine.check(&text).unwrap();
        for (who, action, what, purpose, score, grant) in requests {
            let facts = Facts { purpose: PURPOSES[purpose].into(), score, grant, day: 20_000 };
            let d = engine.decide(&policies, &agent(who), action, &resource(what), &facts).unwrap();
            prop_assert!(d.errors.is_empty(), "{:?}", d.errors);
            prop_assert_eq!(
                d.allowed(),
                reference(&specs, who, action, what, purpose, score, grant),
                "policies:\n{}request: who {} {:?} {} purpose {} score {} grant {}: {:?}",
                text, who, action, OBJECTS[what], PURPOSES[purpose], score, grant, d
            );
        }
    }

    /// Remembered decisions are the decisions: the same under the same policies, and never
    /// carried over to other policies, even when the memo outlives them.
    #[test]
    fn remembered_decisions_are_the_decisions(
        first in proptest::collection::vec(spec(), 0..4),
        second in proptest::collection::vec(spec(), 0..4),
        requests in proptest::collection::vec(
            (0usize..5, proptest::sample::select(Action::ALL.to_vec()), 0usize..3, 0usize..2, any::<bool>()),
            1..16,
        ),
    ) {
        let engine = engine();
        let mut memo = DecisionMemo::new();
        for specs in [&first, &second, &first] {
            let text: String = specs.iter().map(Spec::text).collect();
            let policies = engine.check(&text).unwrap();
            for _ in 0..2 {
                for (who, action, what, purpose, grant) in &requests {
                    let facts = Facts { purpose: PURPOSES[*purpose].into(), score: 0, grant: *grant, day: 20_000 };
                    let fresh = engine.decide(&policies, &agent(*who), *action, &resource(*what), &facts).unwrap();
                    let remembered = engine
                        .decide_remembered(&mut memo, &policies, &agent(*who), *action, &resource(*what), &facts)
                        .unwrap();
                    prop_assert_eq!(fresh, remembered);
                }
            }
        }
        prop_assert!(memo.len() <= 3 * requests.len());
    }
}

#[test]
fn decisions_name_the_policies_that_decided_them() {
    let engine = engine();
    let policies = engine
        .check(&format!(
            r#"@id("hospital-reads-conditions")
permit (principal in SecNet::Organisation::"{ORG}", action == SecNet::Action::"read", resource in SecNet::Collection::"fhir/Condition")
when {{ context.purpose == "treatment" }};
@id("no-research-on-notes")
forbid (principal, action, resource in SecNet::Collection::"notes") when {{ context.purpose == "research" }};"#
        ))
        .unwrap();
    let facts = |purpose: &str, score: u32, grant: bool| Facts {
        purpose: purpose.into(),
        score,
        grant,
        day: 20_000,
    };

    let d = engine
        .decide(
            &policies,
            &agent(1),
            Action::Read,
            &resource(0),
            &facts("treatment", 10, true),
        )
        .unwrap();
    assert!(d.allowed());
    assert_eq!(d.policies, vec!["hospital-reads-conditions"]);
    assert_eq!(d.score, 10);

    let d = engine
        .decide(
            &policies,
            &agent(1),
            Action::Read,
            &resource(0),
            &facts("treatment", 10, false),
        )
        .unwrap();
    assert!(!d.allowed());
    assert_eq!(d.policies, vec!["ledger-grant"]);

    let d = engine
        .decide(
            &policies,
            &agent(1),
            Action::Read,
            &resource(0),
            &facts("treatment", 950_000, true),
        )
        .unwrap();
    assert_eq!(d.policies, vec!["detector"]);
    assert_eq!(d.score, 950_000);

    // Nothing permits: the default deny names no policy.
    let d = engine
        .decide(
            &policies,
            &agent(3),
            Action::Read,
            &resource(0),
            &facts("treatment", 0, true),
        )
        .unwrap();
    assert!(!d.allowed());
    assert!(d.policies.is_empty());

    let d = engine
        .decide(
            &policies,
            &agent(0),
            Action::Control,
            &resource(2),
            &facts("audit", 0, false),
        )
        .unwrap();
    assert!(d.allowed());
    assert_eq!(d.policies, vec!["owner"]);
}

#[test]
fn invalid_policies_are_refused_with_the_reason() {
    let engine = engine();
    let cases = [
        ("permit (principal, action, resource", "does not parse"),
        (
            "permit (principal, action == SecNet::Action::\"delete\", resource);",
            "does not validate",
        ),
        (
            "permit (principal, action, resource) when { context.colour == \"red\" };",
            "does not validate",
        ),
        (
            "permit (principal == SecNet::Robot::\"x\", action, resource);",
            "does not validate",
        ),
        (
            "@id(\"owner\") permit (principal, action, resource);",
            "reserved",
        ),
        (
            "@id(\"a\") permit (principal, action, resource); @id(\"a\") forbid (principal, action, resource);",
            "two policies",
        ),
    ];
    for (text, expected) in cases {
        let err = engine.check(text).unwrap_err().to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
    let huge = "permit (principal, action, resource);\n".repeat(3_000);
    assert!(matches!(engine.check(&huge), Err(PolicyError::TooLarge(_))));
}

#[test]
fn a_consent_that_ends_on_a_day_stops_permitting_after_it() {
    let engine = engine();
    let policies = engine
        .check(&format!(
            r#"@id("consent-until")
permit (principal == SecNet::User::"{}", action == SecNet::Action::"read", resource in SecNet::Collection::"fhir")
when {{ context.purpose == "treatment" && context.day <= 20000 }};"#,
            USERS[2]
        ))
        .unwrap();
    let on = |day: u32| {
        engine
            .decide(
                &policies,
                &agent(3),
                Action::Read,
                &resource(0),
                &Facts {
                    purpose: "treatment".into(),
                    score: 0,
                    grant: true,
                    day,
                },
            )
            .unwrap()
            .allowed()
    };
    assert!(on(19_999));
    assert!(on(20_000));
    assert!(!on(20_001));
}

#[test]
fn one_policy_is_replaced_and_the_others_are_kept_as_written() {
    let engine = engine();
    let text = format!(
        r#"// the owner's own rule
@id("mine")
permit (principal == SecNet::User::"{a}", action == SecNet::Action::"read", resource in SecNet::Collection::"fhir");
@id("consent-x")
permit (principal == SecNet::User::"{b}", action == SecNet::Action::"read", resource);"#,
        a = USERS[0],
        b = USERS[1]
    );
    let replaced = secnet_policy::with_policy_replaced(
        &text,
        "consent-x",
        Some(&format!(
            r#"@id("consent-x")
permit (principal == SecNet::User::"{}", action == SecNet::Action::"read", resource) when {{ context.day <= 1 }};"#,
            USERS[2]
        )),
    )
    .unwrap();
    let ids = engine.check(&replaced).unwrap().ids();
    assert_eq!(ids, vec!["mine", "consent-x"]);
    assert!(replaced.contains(USERS[2]) && !replaced.contains(USERS[1]));
    let removed = secnet_policy::with_policy_replaced(&replaced, "consent-x", None).unwrap();
    assert_eq!(engine.check(&removed).unwrap().ids(), vec!["mine"]);
    assert_eq!(
        secnet_policy::with_policy_replaced("", "consent-x", None).unwrap(),
        ""
    );
    assert!(secnet_policy::with_policy_replaced("permit (", "x", None).is_err());
}
