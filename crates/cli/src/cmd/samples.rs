//! Sample patients for a new devnet: FHIR bundles (the Synthea patients of
//! `../shared/data/fhir` by default) imported at the two hospitals, each owned by a patient
//! key written as an encrypted backup the browser application can restore, and two of them
//! consenting, so that a newcomer can search, read and look at a history at once. Everything
//! goes through the nodes' real API, signed by the patients' keys, exactly as the browser does.

use anyhow::{Context, ensure};
use secnet_client::NodeApi;
use secnet_node::keyfile;
use secnet_types::{AccountId, Call, Genesis, Keypair, RegisterData};
use secnet_web::consent::{self, Terms};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a devnet looks for sample bundles when none is named.
pub const DEFAULT_SAMPLES: &str = "../shared/data/fhir/bundles";

/// One sample patient to import: at which validator, and what they consent to.
struct Sample {
    node: usize,
    consent: Option<(usize, &'static [&'static str], &'static str)>,
}

const SAMPLES: [Sample; 4] = [
    Sample {
        node: 0,
        consent: Some((0, &["conditions", "observations"], "treatment")),
    },
    Sample {
        node: 0,
        consent: None,
    },
    Sample {
        node: 1,
        consent: Some((2, &["conditions"], "research")),
    },
    Sample {
        node: 1,
        consent: None,
    },
];

/// Imports the sample patients into a running devnet; returns the lines for the sample
/// sign-ins file (node, backup file, passphrase).
pub fn seed(
    dir: &Path,
    apis: &[String],
    genesis: &Genesis,
    bundles: &Path,
) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(bundles)
        .with_context(|| format!("reading sample bundles in {}", bundles.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    ensure!(
        !files.is_empty(),
        "no *.json bundles in {}",
        bundles.display()
    );
    let out_dir = dir.join("sample-patients");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    super::runtime()?.block_on(async {
        for api in apis {
            wait_ready(api).await?;
        }
        let mut lines = Vec::new();
        for (i, (sample, file)) in SAMPLES.iter().zip(&files).enumerate() {
            let Some(api) = apis.get(sample.node) else {
                continue;
            };
            let node = NodeApi::new(api)?;
            let key = Keypair::generate();
            let passphrase = hex::encode(rand::random::<[u8; 8]>());
            let backup = out_dir.join(format!("patient{i}.json"));
            keyfile::write_private(
                &backup,
                secnet_node::backup::seal(&key, &passphrase).as_bytes(),
            )?;
            node.execute(
                &key,
                &genesis.chain_id,
                Call::SetEncryptionKey {
                    key: key.encryption_key(),
                },
            )
            .await?;
            let body = std::fs::read(file)?;
            node.import_bundle(&key, &key.account(), Some("sample"), body.clone())
                .await
                .with_context(|| format!("importing {}", file.display()))?;
            if let Some((to, categories, purpose)) = sample.consent
                && let Some(audience) = genesis.validators.get(to)
            {
                consent_to(
                    &node,
                    api,
                    genesis,
                    &key,
                    audience.key,
                    categories,
                    purpose,
                    &body,
                )
                .await
                .with_context(|| format!("consent of sample patient {i}"))?;
            }
            lines.push(format!(
                "node{}  patient  {}  {passphrase}",
                sample.node,
                backup.display()
            ));
        }
        Ok(lines)
    })
}

async fn wait_ready(api: &str) -> anyhow::Result<()> {
    let node = NodeApi::new(api)?;
    for _ in 0..300 {
        if node.status().await.is_ok_and(|s| s.height > 0) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("{api} did not come up within a minute")
}

#[expect(
    clippy::too_many_arguments,
    reason = "one sample's consent, spelled out"
)]
async fn consent_to(
    node: &NodeApi,
    api: &str,
    genesis: &Genesis,
    key: &Keypair,
    audience: AccountId,
    categories: &[&str],
    purpose: &str,
    bundle: &[u8],
) -> anyhow::Result<()> {
    let parsed: serde_json::Value = serde_json::from_slice(bundle)?;
    let records: Vec<serde_json::Value> = parsed
        .get("entry")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource").cloned())
        .collect();
    let today = secnet_policy::Facts::day_of(secnet_node::datadir::now_ms());
    let terms = Terms::new(
        audience,
        &categories
            .iter()
            .map(|c| (*c).to_string())
            .collect::<Vec<_>>(),
        &[purpose.to_string()],
        &consent::date_of_day(today + 365),
        10,
        today,
    )?;
    let shared = consent::shared_bundle(&records, &terms)?;
    let stored = node
        .put_object(
            key,
            &key.account(),
            &consent::object_path(&audience),
            "",
            shared,
            secnet_pdc::envelope::FHIR_JSON,
        )
        .await?;
    node.set_policies(key, &consent::policy(&terms)).await?;
    let holder = node.pdc_info().await?.holder;
    let (_, _, receipt) = node
        .execute(
            key,
            &genesis.chain_id,
            Call::RegisterData(RegisterData {
                hash: stored.hash,
                description: consent::description(&records, &terms).to_description(),
                address: format!("{api}/v1/pdc/data/{}", stored.hash),
                price: terms.price,
                kind: secnet_types::DataKind::UserData,
                holder,
                holder_share_bps: consent::HOLDER_SHARE_BPS,
            }),
        )
        .await?;
    if let Some(r) = receipt.rejection() {
        anyhow::bail!("registration refused: {r}");
    }
    Ok(())
}
