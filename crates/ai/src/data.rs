//! Labelled records as loaded from a file, before encoding: NSL-KDD connection records and
//! HTTP request parameters. Loaders never drop a row silently: every malformed row is
//! counted, with the line and the reason for the first few.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// Which kind of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// NSL-KDD network connection records (41 features).
    NslKdd,
    /// HTTP request parameter values (CSIC 2010 derived), labelled norm/anom.
    HttpParams,
    /// SecNet's own access requests (see [`crate::requests`]).
    AccessRequests,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "nsl-kdd" => Ok(Kind::NslKdd),
            "http-params" => Ok(Kind::HttpParams),
            "access-requests" => Ok(Kind::AccessRequests),
            other => Err(format!(
                "unknown dataset {other:?}: nsl-kdd, http-params or access-requests"
            )),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::NslKdd => "nsl-kdd",
            Kind::HttpParams => "http-params",
            Kind::AccessRequests => "access-requests",
        })
    }
}

/// One labelled record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The raw fields (NSL-KDD: the 41 features; HTTP: the parameter value; access
    /// requests: [`crate::requests::FIELDS`]).
    pub fields: Vec<String>,
    /// Whether it is an attack.
    pub attack: bool,
    /// Its category: `normal`, or the attack's category (`dos`, `probe`, `r2l`, `u2r`,
    /// `sqli`, `xss`, …; `unknown` for an attack no category is known for).
    pub category: String,
}

/// What a loader saw.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LoadReport {
    /// Rows read (header excluded).
    pub rows: usize,
    /// Rows kept.
    pub kept: usize,
    /// Rows refused as malformed.
    pub malformed: usize,
    /// The first few malformed rows: line number and reason.
    pub examples: Vec<(usize, String)>,
    /// Records per category.
    pub categories: BTreeMap<String, usize>,
}

/// Malformed rows described in a report (the rest are only counted).
pub const MAX_EXAMPLES: usize = 10;

impl LoadReport {
    fn refuse(&mut self, line: usize, reason: String) {
        self.malformed += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push((line, reason));
        }
    }

    fn keep(&mut self, r: &Record) {
        self.kept += 1;
        *self.categories.entry(r.category.clone()).or_insert(0) += 1;
    }
}

/// Records of one kind, with the report of their loading.
#[derive(Debug, Clone)]
pub struct Records {
    /// The kind.
    pub kind: Kind,
    /// The records, in file order.
    pub records: Vec<Record>,
    /// What loading saw.
    pub report: LoadReport,
}

/// A file that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Nothing usable in it.
    #[error("{path}: no usable rows ({malformed} malformed; first: {first})")]
    Empty {
        /// The file.
        path: String,
        /// Malformed rows.
        malformed: usize,
        /// The first reason.
        first: String,
    },
}

/// NSL-KDD's 41 feature names and whether each is symbolic, in file order.
pub const NSL_KDD_FIELDS: [(&str, bool); 41] = [
    ("duration", false),
    ("protocol_type", true),
    ("service", true),
    ("flag", true),
    ("src_bytes", false),
    ("dst_bytes", false),
    ("land", false),
    ("wrong_fragment", false),
    ("urgent", false),
    ("hot", false),
    ("num_failed_logins", false),
    ("logged_in", false),
    ("num_compromised", false),
    ("root_shell", false),
    ("su_attempted", false),
    ("num_root", false),
    ("num_file_creations", false),
    ("num_shells", false),
    ("num_access_files", false),
    ("num_outbound_cmds", false),
    ("is_host_login", false),
    ("is_guest_login", false),
    ("count", false),
    ("srv_count", false),
    ("serror_rate", false),
    ("srv_serror_rate", false),
    ("rerror_rate", false),
    ("srv_rerror_rate", false),
    ("same_srv_rate", false),
    ("diff_srv_rate", false),
    ("srv_diff_host_rate", false),
    ("dst_host_count", false),
    ("dst_host_srv_count", false),
    ("dst_host_same_srv_rate", false),
    ("dst_host_diff_srv_rate", false),
    ("dst_host_same_src_port_rate", false),
    ("dst_host_srv_diff_host_rate", false),
    ("dst_host_serror_rate", false),
    ("dst_host_srv_serror_rate", false),
    ("dst_host_rerror_rate", false),
    ("dst_host_srv_rerror_rate", false),
];

/// The attack → category map of the NSL-KDD documentation, including the attacks that
/// appear only in its test set. An `attack-types.csv` beside the data file overrides it.
pub const NSL_KDD_CATEGORIES: &[(&str, &str)] = &[
    ("apache2", "dos"),
    ("back", "dos"),
    ("land", "dos"),
    ("mailbomb", "dos"),
    ("neptune", "dos"),
    ("pod", "dos"),
    ("processtable", "dos"),
    ("smurf", "dos"),
    ("teardrop", "dos"),
    ("udpstorm", "dos"),
    ("ipsweep", "probe"),
    ("mscan", "probe"),
    ("nmap", "probe"),
    ("portsweep", "probe"),
    ("saint", "probe"),
    ("satan", "probe"),
    ("ftp_write", "r2l"),
    ("guess_passwd", "r2l"),
    ("httptunnel", "r2l"),
    ("imap", "r2l"),
    ("multihop", "r2l"),
    ("named", "r2l"),
    ("phf", "r2l"),
    ("sendmail", "r2l"),
    ("snmpgetattack", "r2l"),
    ("snmpguess", "r2l"),
    ("spy", "r2l"),
    ("warezclient", "r2l"),
    ("warezmaster", "r2l"),
    ("worm", "r2l"),
    ("xlock", "r2l"),
    ("xsnoop", "r2l"),
    ("buffer_overflow", "u2r"),
    ("loadmodule", "u2r"),
    ("perl", "u2r"),
    ("ps", "u2r"),
    ("rootkit", "u2r"),
    ("sqlattack", "u2r"),
    ("xterm", "u2r"),
];

fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>, LoadError> {
    std::fs::File::open(path)
        .map(std::io::BufReader::new)
        .map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })
}

fn finish(
    kind: Kind,
    path: &Path,
    records: Vec<Record>,
    report: LoadReport,
) -> Result<Records, LoadError> {
    if records.is_empty() {
        return Err(LoadError::Empty {
            path: path.display().to_string(),
            malformed: report.malformed,
            first: report.examples.first().map_or_else(
                || "the file is empty".to_string(),
                |(l, r)| format!("line {l}: {r}"),
            ),
        });
    }
    Ok(Records {
        kind,
        records,
        report,
    })
}

/// Reads an `attack-types.csv` (`attack,category` per line) beside `data`, if there is one.
fn categories_beside(data: &Path) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = NSL_KDD_CATEGORIES
        .iter()
        .map(|(a, c)| ((*a).to_string(), (*c).to_string()))
        .collect();
    if let Some(file) = data.parent().map(|d| d.join("attack-types.csv"))
        && let Ok(text) = std::fs::read_to_string(file)
    {
        for line in text.lines() {
            if let Some((attack, category)) = line.trim().split_once(',')
                && !attack.is_empty()
                && attack != "normal"
                && attack != "unknown"
            {
                map.insert(attack.to_string(), category.trim().to_string());
            }
        }
    }
    map
}

/// Parses one NSL-KDD line: 41 features, the label, and optionally the difficulty level.
pub fn parse_nsl_kdd_line(
    line: &str,
    categories: &BTreeMap<String, String>,
) -> Result<Record, String> {
    let cols: Vec<&str> = line.trim().split(',').map(str::trim).collect();
    if cols.len() != 42 && cols.len() != 43 {
        return Err(format!("{} columns, expected 42 or 43", cols.len()));
    }
    let mut fields = Vec::with_capacity(41);
    for (i, ((name, symbolic), value)) in NSL_KDD_FIELDS.iter().zip(&cols).enumerate() {
        if *symbolic {
            if value.is_empty() {
                return Err(format!("column {} ({name}) is empty", i + 1));
            }
        } else {
            match value.parse::<f64>() {
                Ok(v) if v.is_finite() => {}
                _ => {
                    return Err(format!(
                        "column {} ({name}) is not a number: {value:?}",
                        i + 1
                    ));
                }
            }
        }
        fields.push((*value).to_string());
    }
    let label = cols
        .get(41)
        .copied()
        .unwrap_or_default()
        .trim_end_matches('.');
    if label.is_empty() {
        return Err("the label is empty".into());
    }
    if let Some(level) = cols.get(42)
        && level.parse::<u32>().is_err()
    {
        return Err(format!("difficulty level is not a number: {level:?}"));
    }
    let attack = label != "normal";
    let category = if attack {
        categories
            .get(label)
            .cloned()
            .unwrap_or_else(|| "unknown".into())
    } else {
        "normal".into()
    };
    Ok(Record {
        fields,
        attack,
        category,
    })
}

/// Reads `path` line by line: blank lines and those `skip` names are passed over, every
/// other line is a row that `parse` keeps or refuses with a reason.
fn load_lines(
    kind: Kind,
    path: &Path,
    skip: impl Fn(usize, &str) -> bool,
    parse: impl Fn(&str) -> Result<Record, String>,
) -> Result<Records, LoadError> {
    let mut report = LoadReport::default();
    let mut records = Vec::new();
    for (i, line) in open(path)?.lines().enumerate() {
        let line = line.map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if line.trim().is_empty() || skip(i, &line) {
            continue;
        }
        report.rows += 1;
        match parse(&line) {
            Ok(r) => {
                report.keep(&r);
                records.push(r);
            }
            Err(reason) => report.refuse(i + 1, reason),
        }
    }
    finish(kind, path, records, report)
}

/// Loads an NSL-KDD file (`KDDTrain+.txt`, `KDDTest+.txt`, …).
pub fn load_nsl_kdd(path: &Path) -> Result<Records, LoadError> {
    let categories = categories_beside(path);
    load_lines(
        Kind::NslKdd,
        path,
        |_, _| false,
        |line| parse_nsl_kdd_line(line, &categories),
    )
}

/// Loads the HTTP parameter CSV: `payload,length,attack_type,label` with a header, label
/// `norm` or `anom`.
pub fn load_http_params(path: &Path) -> Result<Records, LoadError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(open(path)?);
    let mut report = LoadReport::default();
    let mut records = Vec::new();
    for (i, row) in reader.byte_records().enumerate() {
        report.rows += 1;
        let line = i + 2;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                report.refuse(line, format!("not CSV: {e}"));
                continue;
            }
        };
        match parse_http_row(&row) {
            Ok(r) => {
                report.keep(&r);
                records.push(r);
            }
            Err(reason) => report.refuse(line, reason),
        }
    }
    finish(Kind::HttpParams, path, records, report)
}

fn parse_http_row(row: &csv::ByteRecord) -> Result<Record, String> {
    if row.len() != 4 {
        return Err(format!("{} columns, expected 4", row.len()));
    }
    let text = |i: usize| -> Result<String, String> {
        let bytes = row.get(i).unwrap_or_default();
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("column {} is not UTF-8", i + 1))
    };
    let payload = String::from_utf8_lossy(row.get(0).unwrap_or_default()).into_owned();
    let attack_type = text(2)?;
    let attack = match text(3)?.as_str() {
        "norm" => false,
        "anom" => true,
        other => return Err(format!("label {other:?}, expected norm or anom")),
    };
    if text(1)?.parse::<u64>().is_err() {
        return Err("length is not a number".into());
    }
    let category = if attack {
        if attack_type.is_empty() || attack_type == "norm" {
            "unknown".to_string()
        } else {
            attack_type
        }
    } else {
        "normal".to_string()
    };
    Ok(Record {
        fields: vec![payload],
        attack,
        category,
    })
}

/// Loads an access-request CSV (the header of [`crate::requests::header`]).
pub fn load_access_requests(path: &Path) -> Result<Records, LoadError> {
    load_lines(
        Kind::AccessRequests,
        path,
        |i, line| i == 0 && line.starts_with(crate::requests::FIELDS[0]),
        |line| {
            let cols: Vec<&str> = line.trim().split(',').map(str::trim).collect();
            crate::requests::parse_row(&cols)
        },
    )
}

/// Loads `path` as `kind`.
pub fn load(kind: Kind, path: &Path) -> Result<Records, LoadError> {
    match kind {
        Kind::NslKdd => load_nsl_kdd(path),
        Kind::HttpParams => load_http_params(path),
        Kind::AccessRequests => load_access_requests(path),
    }
}
