//! The registry's keys in Redis and the few operations on them, each bounded by a timeout so
//! that a slow or absent Redis never holds a request up for long.
//!
//! - `finch:node:{node_id}` → JSON [`NodeRecord`] (its URL and load), `EX ttl`.
//! - `finch:path:{path}` → the owning `node_id`, `EX ttl`. Claimed with a script, so two nodes
//!   never both own a path: the key is set only when it is absent or already ours (or, with
//!   `override_publisher`, taken over).

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const NODE_PREFIX: &str = "finch:node:";
const PATH_PREFIX: &str = "finch:path:";

/// The longest any one Redis operation may take before it counts as a failure.
pub(super) const OP_TIMEOUT: Duration = Duration::from_millis(800);

/// What a node publishes about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// How other nodes reach it.
    pub advertise_url: String,
    /// Its RTSP readers.
    pub readers: u64,
    /// Its publishers and pulled sources.
    pub publishers: u64,
    /// Bits per second it receives.
    pub bitrate_in: u64,
}

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered with an error or the connection broke.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within [`OP_TIMEOUT`].
    #[error("redis did not answer within {} ms", OP_TIMEOUT.as_millis())]
    Timeout,
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The path is ours (it was free, already ours, or taken over).
    Ours,
    /// Another node holds it.
    Theirs(String),
}

/// The Redis side of the cluster.
pub(super) struct Store {
    redis: ConnectionManager,
    claim: Script,
    release: Script,
}

async fn bounded<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(StoreError::Timeout),
    }
}

impl Store {
    /// A store on `url`; it connects on first use and reconnects by itself.
    pub(super) fn new(url: &str) -> Result<Store, StoreError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let redis = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Store {
            redis,
            // KEYS[1] path key; ARGV: node id, ttl, "1" to take it over. Returns the owner
            // after the call.
            claim: Script::new(
                r"local v = redis.call('GET', KEYS[1])
                  if v == false or v == ARGV[1] or ARGV[3] == '1' then
                    redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
                    return ARGV[1]
                  end
                  return v",
            ),
            // Deletes the path key only if it is still ours.
            release: Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then
                    return redis.call('DEL', KEYS[1])
                  end
                  return 0",
            ),
        })
    }

    /// Claims `path` for `node` for `ttl` (refreshing it if it is ours already).
    pub(super) async fn claim(
        &self,
        path: &str,
        node: &str,
        ttl: Duration,
        take_over: bool,
    ) -> Result<Claimed, StoreError> {
        let mut c = self.redis.clone();
        let mut inv = self.claim.key(format!("{PATH_PREFIX}{path}"));
        inv.arg(node)
            .arg(ttl.as_secs().max(1))
            .arg(if take_over { "1" } else { "0" });
        let owner: String = bounded(inv.invoke_async(&mut c)).await?;
        Ok(if owner == node {
            Claimed::Ours
        } else {
            Claimed::Theirs(owner)
        })
    }

    /// Gives `path` up, if `node` still holds it.
    pub(super) async fn release(&self, path: &str, node: &str) -> Result<(), StoreError> {
        let mut c = self.redis.clone();
        let mut inv = self.release.key(format!("{PATH_PREFIX}{path}"));
        inv.arg(node);
        let _: i64 = bounded(inv.invoke_async(&mut c)).await?;
        Ok(())
    }

    /// Writes this node's record for `ttl`.
    pub(super) async fn register(
        &self,
        node: &str,
        record: &NodeRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.redis.clone();
        let json = serde_json::to_string(record).unwrap_or_default();
        bounded(c.set_ex::<_, _, ()>(format!("{NODE_PREFIX}{node}"), json, ttl.as_secs().max(1)))
            .await
    }

    /// Removes this node's record (a clean stop).
    pub(super) async fn unregister(&self, node: &str) -> Result<(), StoreError> {
        let mut c = self.redis.clone();
        bounded(c.del::<_, ()>(format!("{NODE_PREFIX}{node}"))).await
    }

    /// Who owns `path`, and how to reach it, if a live node does.
    pub(super) async fn owner(
        &self,
        path: &str,
    ) -> Result<Option<(String, NodeRecord)>, StoreError> {
        let mut c = self.redis.clone();
        let node: Option<String> = bounded(c.get(format!("{PATH_PREFIX}{path}"))).await?;
        let Some(node) = node else { return Ok(None) };
        let record: Option<String> = bounded(c.get(format!("{NODE_PREFIX}{node}"))).await?;
        Ok(record
            .and_then(|r| serde_json::from_str::<NodeRecord>(&r).ok())
            .map(|r| (node, r)))
    }

    /// Every registered node with the paths it owns, sorted by node id.
    pub(super) async fn nodes(&self) -> Result<Vec<(String, NodeRecord, Vec<String>)>, StoreError> {
        let mut c = self.redis.clone();
        let node_keys = self.scan(&mut c, NODE_PREFIX).await?;
        let path_keys = self.scan(&mut c, PATH_PREFIX).await?;
        let records: Vec<Option<String>> = if node_keys.is_empty() {
            Vec::new()
        } else {
            bounded(c.mget(&node_keys)).await?
        };
        let owners: Vec<Option<String>> = if path_keys.is_empty() {
            Vec::new()
        } else {
            bounded(c.mget(&path_keys)).await?
        };
        let mut out: Vec<(String, NodeRecord, Vec<String>)> = node_keys
            .iter()
            .zip(records)
            .filter_map(|(k, r)| {
                let record = serde_json::from_str::<NodeRecord>(&r?).ok()?;
                Some((k[NODE_PREFIX.len()..].to_owned(), record, Vec::new()))
            })
            .collect();
        for (k, owner) in path_keys.iter().zip(owners) {
            let Some(owner) = owner else { continue };
            if let Some(n) = out.iter_mut().find(|n| n.0 == owner) {
                n.2.push(k[PATH_PREFIX.len()..].to_owned());
            }
        }
        for n in &mut out {
            n.2.sort();
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn scan(
        &self,
        c: &mut ConnectionManager,
        prefix: &str,
    ) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{prefix}*");
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        // Bounded: a registry bigger than this is beyond what one listing should carry.
        for _ in 0..1000 {
            let (next, batch): (u64, Vec<String>) = bounded(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(c),
            )
            .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}
