//! FHIR R4 resources: structural validation on write, and the decomposition of a Bundle into
//! separate resources (the paper's knowledge decomposition: each condition, medication and
//! observation becomes a component that can be shared on its own).
//!
//! Validation covers what a store must not get wrong: the resource type is one SecNet
//! handles, `id` has the R4 form, every element R4 requires is present, coded elements with
//! a required value set hold one of its codes, and dates and references have their R4 form.
//! A full profile validator (terminology bindings, invariants) is beyond a store.

use serde_json::{Map, Value};

/// Resource types SecNet stores, with the elements R4 requires of each (a `[x]` suffix means
/// any one of the choice's types).
const REQUIRED: &[(&str, &[&str])] = &[
    ("Patient", &[]),
    ("Practitioner", &[]),
    ("Organization", &[]),
    ("Encounter", &["status", "class"]),
    ("Condition", &["subject"]),
    ("Observation", &["status", "code"]),
    (
        "MedicationRequest",
        &["status", "intent", "subject", "medication[x]"],
    ),
    ("DiagnosticReport", &["status", "code"]),
    ("AllergyIntolerance", &["patient"]),
    ("Procedure", &["status", "subject"]),
    (
        "Immunization",
        &["status", "vaccineCode", "patient", "occurrence[x]"],
    ),
    ("Consent", &["status", "scope", "category"]),
    ("AuditEvent", &["type", "recorded", "agent", "source"]),
    ("Bundle", &["type"]),
];

/// Required value sets of coded elements: (resource type, element, codes).
const CODES: &[(&str, &str, &[&str])] = &[
    ("Patient", "gender", &["male", "female", "other", "unknown"]),
    (
        "Practitioner",
        "gender",
        &["male", "female", "other", "unknown"],
    ),
    (
        "Encounter",
        "status",
        &[
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
    ),
    (
        "Observation",
        "status",
        &[
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
    ),
    (
        "MedicationRequest",
        "status",
        &[
            "active",
            "on-hold",
            "cancelled",
            "completed",
            "entered-in-error",
            "stopped",
            "draft",
            "unknown",
        ],
    ),
    (
        "MedicationRequest",
        "intent",
        &[
            "proposal",
            "plan",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        ],
    ),
    (
        "DiagnosticReport",
        "status",
        &[
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
    ),
    (
        "Procedure",
        "status",
        &[
            "preparation",
            "in-progress",
            "not-done",
            "on-hold",
            "stopped",
            "completed",
            "entered-in-error",
            "unknown",
        ],
    ),
    (
        "Immunization",
        "status",
        &["completed", "entered-in-error", "not-done"],
    ),
    (
        "Consent",
        "status",
        &[
            "draft",
            "proposed",
            "active",
            "rejected",
            "inactive",
            "entered-in-error",
        ],
    ),
    (
        "Bundle",
        "type",
        &[
            "document",
            "message",
            "transaction",
            "transaction-response",
            "batch",
            "batch-response",
            "history",
            "searchset",
            "collection",
        ],
    ),
];

/// Elements of type `date`.
const DATES: &[&str] = &["birthDate"];
/// Elements of type `dateTime` or `instant`.
const DATE_TIMES: &[&str] = &[
    "effectiveDateTime",
    "onsetDateTime",
    "abatementDateTime",
    "authoredOn",
    "issued",
    "recordedDate",
    "recorded",
    "occurrenceDateTime",
    "performedDateTime",
    "deceasedDateTime",
    "dateTime",
];

/// A resource that is not valid FHIR R4 (as far as SecNet checks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    /// Not JSON.
    #[error("FHIR resource is not valid JSON: {0}")]
    Json(String),
    /// Not a JSON object with a string `resourceType`.
    #[error("FHIR resource must be a JSON object with a string resourceType")]
    NotAResource,
    /// A resource type SecNet does not store.
    #[error("unsupported FHIR resource type {0:?}")]
    UnsupportedType(String),
    /// A required element is missing.
    #[error("{resource_type}.{element} is required")]
    Missing {
        /// Resource type.
        resource_type: String,
        /// Element.
        element: String,
    },
    /// A value that breaks its element's rules.
    #[error("{path}: {problem}")]
    Invalid {
        /// JSON path of the element.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(path: &str, problem: impl Into<String>) -> FhirError {
    FhirError::Invalid {
        path: path.to_string(),
        problem: problem.into(),
    }
}

/// The StructureDefinition URL of a base resource type.
pub fn structure_definition(resource_type: &str) -> String {
    format!("http://hl7.org/fhir/StructureDefinition/{resource_type}")
}

/// Validates a serialized resource and returns its resource type.
pub fn validate(bytes: &[u8]) -> Result<String, FhirError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| FhirError::Json(e.to_string()))?;
    validate_value(&value, "")
}

/// Validates a parsed resource (at JSON path `path`) and returns its resource type.
pub fn validate_value(value: &Value, path: &str) -> Result<String, FhirError> {
    let obj = value.as_object().ok_or(FhirError::NotAResource)?;
    let rt = obj
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or(FhirError::NotAResource)?;
    let here = |e: &str| {
        if path.is_empty() {
            format!("{rt}.{e}")
        } else {
            format!("{path}.{e}")
        }
    };
    let required = REQUIRED
        .iter()
        .find(|(t, _)| *t == rt)
        .map(|(_, r)| *r)
        .ok_or_else(|| FhirError::UnsupportedType(rt.to_string()))?;
    for element in required {
        let present = match element.strip_suffix("[x]") {
            Some(prefix) => obj.keys().any(|k| {
                k.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
            }),
            None => obj.get(*element).is_some_and(|v| !v.is_null()),
        };
        if !present {
            return Err(FhirError::Missing {
                resource_type: rt.to_string(),
                element: (*element).to_string(),
            });
        }
    }
    if let Some(id) = obj.get("id") {
        let id = id
            .as_str()
            .ok_or_else(|| invalid(&here("id"), "must be a string"))?;
        if !is_id(id) {
            return Err(invalid(&here("id"), "must be 1-64 of A-Z a-z 0-9 - ."));
        }
    }
    for (t, element, codes) in CODES {
        if *t != rt {
            continue;
        }
        if let Some(v) = obj.get(*element) {
            let code = v
                .as_str()
                .ok_or_else(|| invalid(&here(element), "must be a code"))?;
            if !codes.contains(&code) {
                return Err(invalid(
                    &here(element),
                    format!("{code:?} is not one of {}", codes.join(", ")),
                ));
            }
        }
    }
    check_elements(obj, &here(""))?;
    if rt == "Bundle" {
        validate_bundle_entries(obj, &here("entry"))?;
    }
    Ok(rt.to_string())
}

fn validate_bundle_entries(obj: &Map<String, Value>, path: &str) -> Result<(), FhirError> {
    let Some(entries) = obj.get("entry") else {
        return Ok(());
    };
    let entries = entries
        .as_array()
        .ok_or_else(|| invalid(path, "must be an array"))?;
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if let Some(resource) = entry.get("resource") {
            validate_value(resource, &format!("{at}.resource"))?;
        }
    }
    Ok(())
}

/// Checks dates, dateTimes and references anywhere below `obj` (not inside contained
/// resources of a Bundle, which are validated on their own).
fn check_elements(obj: &Map<String, Value>, path: &str) -> Result<(), FhirError> {
    for (k, v) in obj {
        if k == "entry" && obj.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            continue;
        }
        let at = format!("{}.{k}", path.trim_end_matches('.'));
        if DATES.contains(&k.as_str()) {
            let s = v
                .as_str()
                .ok_or_else(|| invalid(&at, "must be a date string"))?;
            if !is_date(s) {
                return Err(invalid(
                    &at,
                    format!("{s:?} is not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)"),
                ));
            }
        } else if DATE_TIMES.contains(&k.as_str()) {
            let s = v
                .as_str()
                .ok_or_else(|| invalid(&at, "must be a dateTime string"))?;
            if !is_date_time(s) {
                return Err(invalid(&at, format!("{s:?} is not a FHIR dateTime")));
            }
        } else if k == "reference" {
            let s = v.as_str().ok_or_else(|| invalid(&at, "must be a string"))?;
            if s.is_empty() {
                return Err(invalid(&at, "must not be empty"));
            }
        }
        match v {
            Value::Object(inner) => check_elements(inner, &at)?,
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Object(inner) = item {
                        check_elements(inner, &format!("{at}[{i}]"))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn in_range(s: &str, lo: u32, hi: u32) -> bool {
    s.parse::<u32>().is_ok_and(|v| (lo..=hi).contains(&v))
}

fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [y] => digits(y, 4),
        [y, m] => digits(y, 4) && digits(m, 2) && in_range(m, 1, 12),
        [y, m, d] => {
            digits(y, 4) && digits(m, 2) && in_range(m, 1, 12) && digits(d, 2) && in_range(d, 1, 31)
        }
        _ => false,
    }
}

fn is_date_time(s: &str) -> bool {
    let Some((date, time)) = s.split_once('T') else {
        return is_date(s);
    };
    if !is_date(date) || date.len() != 10 {
        return false;
    }
    let (clock, zone) = if let Some(t) = time.strip_suffix('Z') {
        (t, "Z")
    } else if let Some(i) = time.rfind(['+', '-']) {
        time.split_at(i)
    } else {
        return false;
    };
    let zone_ok = zone == "Z"
        || (zone.len() == 6
            && zone.get(3..4) == Some(":")
            && zone.get(1..3).is_some_and(|h| in_range(h, 0, 14))
            && zone.get(4..6).is_some_and(|m| in_range(m, 0, 59)));
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, "0"));
    let hms: Vec<&str> = hms.split(':').collect();
    let clock_ok = matches!(hms.as_slice(), [h, m, s]
        if digits(h, 2) && in_range(h, 0, 23) && digits(m, 2) && in_range(m, 0, 59) && digits(s, 2) && in_range(s, 0, 60))
        && !frac.is_empty()
        && frac.len() <= 9
        && frac.bytes().all(|b| b.is_ascii_digit());
    zone_ok && clock_ok
}

/// One resource of a decomposed Bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Its resource type.
    pub resource_type: String,
    /// Its id (from the resource, or from the entry's `urn:uuid:` full URL).
    pub id: String,
    /// The resource, with references to other entries of the Bundle rewritten to
    /// `ResourceType/id`.
    pub resource: Value,
}

/// A decomposed Bundle: its resources, and the Patient they are about.
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposed {
    /// The Patient's id, when the Bundle has exactly one Patient.
    pub patient: Option<String>,
    /// Every resource of the Bundle.
    pub components: Vec<Component>,
}

/// Splits a Bundle into its resources. Each resource gets an id (its own, or the UUID of its
/// `urn:uuid:` full URL), and references between entries are rewritten to the relative form
/// `ResourceType/id`, so each component stands on its own.
pub fn decompose(bundle: &[u8]) -> Result<Decomposed, FhirError> {
    let value: Value =
        serde_json::from_slice(bundle).map_err(|e| FhirError::Json(e.to_string()))?;
    let rt = validate_value(&value, "")?;
    if rt != "Bundle" {
        return Err(invalid(
            "resourceType",
            format!("expected a Bundle, got {rt}"),
        ));
    }
    let entries = value
        .get("entry")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // First pass: ids and the full-URL → relative-reference map.
    let mut refs = std::collections::HashMap::new();
    let mut components = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let full_url = entry
            .get("fullUrl")
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(mut resource) = entry.get("resource").cloned() else {
            return Err(invalid(&format!("Bundle.entry[{i}]"), "has no resource"));
        };
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let id = match resource.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => full_url
                .as_deref()
                .and_then(|u| u.strip_prefix("urn:uuid:"))
                .filter(|u| is_id(u))
                .map(str::to_string)
                .ok_or_else(|| {
                    invalid(
                        &format!("Bundle.entry[{i}]"),
                        "resource has no id and no urn:uuid: fullUrl to take one from",
                    )
                })?,
        };
        if let Some(obj) = resource.as_object_mut() {
            obj.insert("id".into(), Value::String(id.clone()));
        }
        if let Some(url) = full_url {
            refs.insert(url, format!("{resource_type}/{id}"));
        }
        components.push(Component {
            resource_type,
            id,
            resource,
        });
    }
    for c in &mut components {
        rewrite_references(&mut c.resource, &refs);
    }
    let patients: Vec<&Component> = components
        .iter()
        .filter(|c| c.resource_type == "Patient")
        .collect();
    let patient = match patients.as_slice() {
        [p] => Some(p.id.clone()),
        _ => None,
    };
    Ok(Decomposed {
        patient,
        components,
    })
}

fn rewrite_references(value: &mut Value, refs: &std::collections::HashMap<String, String>) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                if k == "reference"
                    && let Some(target) = v.as_str().and_then(|s| refs.get(s))
                {
                    *v = Value::String(target.clone());
                } else {
                    rewrite_references(v, refs);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_references(v, refs)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use serde_json::json;

    fn bundle() -> Value {
        json!({
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
                 "resource": {"resourceType": "Patient", "gender": "female", "birthDate": "1985-11-20"}},
                {"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
                 "resource": {"resourceType": "Condition",
                    "code": {"text": "Diabetes"},
                    "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
                    "onsetDateTime": "2019-03-01T10:00:00+01:00"}},
                {"fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333",
                 "resource": {"resourceType": "Observation", "status": "final",
                    "code": {"text": "HbA1c"},
                    "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
                    "effectiveDateTime": "2019-03-01T10:00:00Z",
                    "valueQuantity": {"value": 7.1, "unit": "%"}}}
            ]
        })
    }

    #[test]
    fn a_bundle_decomposes_into_standalone_components() {
        let d = decompose(&serde_json::to_vec(&bundle()).unwrap()).unwrap();
        assert_eq!(
            d.patient.as_deref(),
            Some("11111111-1111-4111-8111-111111111111")
        );
        assert_eq!(d.components.len(), 3);
        let condition = &d.components[1];
        assert_eq!(condition.resource_type, "Condition");
        assert_eq!(
            condition.resource["subject"]["reference"],
            "Patient/11111111-1111-4111-8111-111111111111"
        );
        for c in &d.components {
            assert_eq!(
                validate(&serde_json::to_vec(&c.resource).unwrap()).unwrap(),
                c.resource_type
            );
        }
    }

    #[test]
    fn invalid_resources_say_what_is_wrong() {
        let cases = [
            (json!([1, 2]), "JSON object"),
            (
                json!({"resourceType": "Spaceship"}),
                "unsupported FHIR resource type",
            ),
            (
                json!({"resourceType": "Observation", "code": {}}),
                "Observation.status is required",
            ),
            (
                json!({"resourceType": "Observation", "status": "done", "code": {}}),
                "\"done\" is not one of",
            ),
            (
                json!({"resourceType": "Patient", "birthDate": "85-11-20"}),
                "is not a FHIR date",
            ),
            (
                json!({"resourceType": "Patient", "id": "a b"}),
                "Patient.id",
            ),
            (
                json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": {"reference": "Patient/1"}}),
                "medication[x] is required",
            ),
            (
                json!({"resourceType": "Condition", "subject": {"reference": "Patient/1"}, "onsetDateTime": "2019-13-01"}),
                "not a FHIR dateTime",
            ),
            (
                json!({"resourceType": "Condition", "subject": {"reference": "Patient/1"}, "recordedDate": "2019-01-01T25:00:00Z"}),
                "not a FHIR dateTime",
            ),
        ];
        for (resource, expected) in cases {
            let err = validate(&serde_json::to_vec(&resource).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{resource}: {err}");
        }
        let mut b = bundle();
        b["entry"][2]["resource"]["status"] = json!("bogus");
        let err = validate(&serde_json::to_vec(&b).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("Bundle.entry[2].resource.status"), "{err}");
        assert!(
            validate(b"{not json")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn date_times_follow_r4() {
        for ok in [
            "2019",
            "2019-03",
            "2019-03-01",
            "2019-03-01T10:00:00Z",
            "2019-03-01T10:00:00.123+05:30",
            "2019-03-01T23:59:60-08:00",
        ] {
            assert!(is_date_time(ok), "{ok}");
        }
        for bad in [
            "2019-3-1",
            "2019-03-01T10:00Z",
            "2019-03-01T10:00:00",
            "2019-03-01T10:00:00+5:30",
            "2019-03-01T10:00:00.Z",
            "yesterday",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
    }
}
