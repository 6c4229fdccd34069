//! Loading: file (or none), then `FINCH_SECTION__KEY` environment overrides, then validation.
//!
//! Every refusal says where: `FILE:LINE:COLUMN: reason` for the file (from toml's spans), the
//! variable's name for the environment. Nothing here touches a running server: a caller that
//! gets an error keeps the config it had.

use crate::schema::Config;
use std::path::Path;
use thiserror::Error;
use toml::de::{DeTable, DeValue};

/// Environment variables with this prefix override config keys.
pub const ENV_PREFIX: &str = "FINCH_";

/// Why a config was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the config file: {reason}")]
    Read {
        /// The file.
        file: String,
        /// The OS error.
        reason: String,
    },
    /// The file is not valid TOML, or a key or value in it is wrong.
    #[error("{file}:{line}:{column}: {reason}")]
    File {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// An environment override is wrong.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        reason: String,
    },
    /// A value that came from neither (a command-line flag) is out of range.
    #[error("{key}: {reason}")]
    Value {
        /// The dotted key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Loads the config: built-in defaults when `path` is `None`, else the file; then the overrides
/// from `env` (pass `std::env::vars()`: only `FINCH_*` ones are looked at).
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let (text, name) = match path {
        Some(p) => {
            let name = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                file: name.clone(),
                reason: e.to_string(),
            })?;
            (text, name)
        }
        None => (String::new(), "<defaults>".to_owned()),
    };
    load_str(&text, &name, env)
}

/// Loads a config from text; `file` is the name used in error messages.
pub fn load_str(
    text: &str,
    file: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let at = |span: Option<std::ops::Range<usize>>, reason: &str| {
        let (line, column) = line_col(text, span.map_or(0, |s| s.start));
        ConfigError::File {
            file: file.to_owned(),
            line,
            column,
            reason: reason.trim().to_owned(),
        }
    };
    // First the file alone, so type errors and unknown keys point into it.
    let mut config: Config = toml::from_str(text).map_err(|e| at(e.span(), e.message()))?;
    let mut table: toml::Table = toml::from_str(text).map_err(|e| at(e.span(), e.message()))?;
    let mut env_keys: Vec<(Vec<String>, String)> = Vec::new();
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    overrides.sort();
    for (var, raw) in overrides {
        let key = env_key(&var).ok_or_else(|| ConfigError::Env {
            var: var.clone(),
            reason: "expected FINCH_<SECTION>__<KEY>, such as FINCH_RTSP__PORT".to_owned(),
        })?;
        let section = table
            .entry(key[0].clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section) = section.as_table_mut() else {
            return Err(ConfigError::Env {
                var,
                reason: format!("{} is not a section", key[0]),
            });
        };
        section.insert(key[1].clone(), scalar(&raw));
        config = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Env {
                var: var.clone(),
                reason: e.message().trim().to_owned(),
            })?;
        env_keys.push((key, var));
    }
    if let Err(invalid) = config.validate() {
        if let Some((_, var)) = env_keys.iter().find(|(k, _)| invalid.key.starts_with(k)) {
            return Err(ConfigError::Env {
                var: var.clone(),
                reason: invalid.reason,
            });
        }
        if let Some(span) = key_span(text, &invalid.key) {
            return Err(at(Some(span), &invalid.reason));
        }
        return Err(ConfigError::Value {
            key: invalid.key.join("."),
            reason: invalid.reason,
        });
    }
    Ok(config)
}

/// `FINCH_RTSP__PORT` → `["rtsp", "port"]`; the key's own underscores are kept.
fn env_key(var: &str) -> Option<Vec<String>> {
    let rest = var.strip_prefix(ENV_PREFIX)?;
    let (section, key) = rest.split_once("__")?;
    if section.is_empty() || key.is_empty() || key.contains("__") {
        return None;
    }
    Some(vec![section.to_ascii_lowercase(), key.to_ascii_lowercase()])
}

/// The value as a TOML scalar (or array); anything that does not parse is a string, so
/// `FINCH_LOG__LEVEL=debug` needs no quotes.
fn scalar(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Where a dotted key is written in the file, found through toml's spanned parse. A segment
/// that is a number indexes an array (`auth.users.2.ips` is the third `[[auth.users]]`).
fn key_span(text: &str, key: &[String]) -> Option<std::ops::Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let mut value: Option<&DeValue<'_>> = None;
    let mut span = None;
    for seg in key {
        let next = match value {
            None => {
                let (k, v) = doc
                    .get_ref()
                    .iter()
                    .find(|(k, _)| k.get_ref().as_ref() == seg.as_str())?;
                span = Some(k.span());
                v
            }
            Some(DeValue::Table(t)) => {
                let Some((k, v)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == seg.as_str())
                else {
                    return span;
                };
                span = Some(k.span());
                v
            }
            Some(DeValue::Array(a)) => {
                let Some(item) = seg.parse::<usize>().ok().and_then(|i| a.get(i)) else {
                    return span;
                };
                span = Some(item.span());
                item
            }
            Some(_) => return span,
        };
        value = Some(next.get_ref());
    }
    span
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(load_str("", "f.toml", no_env()).unwrap(), Config::default());
        assert_eq!(load(None, no_env()).unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let e = load_str("[rtsp]\nport = 8554\nprot = 1\n", "f.toml", no_env()).unwrap_err();
        let ConfigError::File {
            line,
            column,
            reason,
            ..
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!((*line, *column), (3, 1), "{e}");
        assert!(reason.contains("prot"), "{reason}");
        assert!(e.to_string().starts_with("f.toml:3:1: "), "{e}");
    }

    #[test]
    fn wrong_type_names_the_value() {
        let e = load_str("[rtsp]\nport = \"x\"\n", "f.toml", no_env()).unwrap_err();
        assert!(e.to_string().starts_with("f.toml:2:8: "), "{e}");
    }

    #[test]
    fn syntax_error() {
        let e = load_str("[rtsp\n", "f.toml", no_env()).unwrap_err();
        assert!(matches!(e, ConfigError::File { line: 1, .. }), "{e}");
    }

    #[test]
    fn out_of_range_value_points_at_its_key() {
        let e = load_str(
            "[rtsp]\nport = 8554\n\n[relay]\nreader_queue_packets = 1\n",
            "f.toml",
            no_env(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "f.toml:5:1: must be between 16 and 1048576");
        let e = load_str(
            "[paths.\"live/*\"]\nsource = \"http://x\"\n",
            "f.toml",
            no_env(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("f.toml:2:1: "), "{e}");
    }

    #[test]
    fn a_bad_user_entry_points_at_its_line() {
        let text = "[[auth.users]]\nuser = \"cam\"\npass = \"x\"\n\n[[auth.users]]\nuser = \"v\"\npass = \"y\"\nips = [\"10.0.0.0/40\"]\n";
        let e = load_str(text, "f.toml", no_env()).unwrap_err();
        assert!(e.to_string().starts_with("f.toml:8:1: "), "{e}");
        assert!(e.to_string().contains("prefix"), "{e}");
        let text = "[[auth.users]]\nuser = \"cam\"\npass = \"x\"\npermissions = [{ action = \"write\" }]\n";
        let e = load_str(text, "f.toml", no_env()).unwrap_err();
        assert!(e.to_string().starts_with("f.toml:4:"), "{e}");
        assert!(e.to_string().contains("publish or read"), "{e}");
        let text = "[[auth.users]]\nuser = \"cam\"\npass = \"digest-md5:12\"\n";
        let e = load_str(text, "f.toml", no_env()).unwrap_err();
        assert!(e.to_string().starts_with("f.toml:3:1: "), "{e}");
    }

    #[test]
    fn a_bad_pulled_path_points_at_its_key() {
        for (text, line, reason) in [
            (
                "[paths.\"cam/*\"]\nsource = \"rtsp://c/x\"\n",
                2,
                "not a pattern",
            ),
            (
                "[paths.\"cam/1\"]\nsource = \"rtsp://c/x\"\nsource_transport = \"quic\"\n",
                3,
                "auto, tcp or udp",
            ),
            (
                "[paths.\"cam/1\"]\nsource = \"rtsps://c/x\"\nsource_transport = \"udp\"\n",
                3,
                "TLS",
            ),
            (
                "[paths.\"cam/1\"]\nsource = \"rtsp://c/x\"\nsource_read_timeout_secs = 0\n",
                3,
                "between 1 and 3600",
            ),
        ] {
            let e = load_str(text, "f.toml", no_env()).unwrap_err().to_string();
            assert!(e.starts_with(&format!("f.toml:{line}:")), "{text}: {e}");
            assert!(e.contains(reason), "{text}: {e}");
        }
        let ok = "[paths.\"cam/1\"]\nsource = \"rtsps://admin:pw@c/x\"\n";
        assert!(load_str(ok, "f.toml", no_env()).is_ok());
    }

    #[test]
    fn environment_overrides_file() {
        let c = load_str(
            "[rtsp]\nport = 9000\n",
            "f.toml",
            env(&[
                ("FINCH_RTSP__PORT", "8555"),
                ("FINCH_DEBUG__FAULT_INJECTION", "true"),
                ("FINCH_LOG__LEVEL", "debug"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.rtsp.port, 8555);
        assert!(c.debug.fault_injection);
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn bad_environment_is_refused_by_name() {
        for (var, val) in [
            ("FINCH_RTSP__PROT", "1"),
            ("FINCH_NOPE__X", "1"),
            ("FINCH_RTSP", "1"),
            ("FINCH_RTSP__PORT", "not a number"),
            ("FINCH_RTSP__SESSION_TIMEOUT_SECS", "1"),
        ] {
            let e = load_str("", "f.toml", env(&[(var, val)])).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Env { var: v, .. } if v == var),
                "{var}: {e}"
            );
        }
    }

    #[test]
    fn paths_keep_file_order() {
        let c = load_str(
            "[paths.\"live/cam1\"]\nsource = \"rtsp://cam/1\"\n[paths.\"live/*\"]\n",
            "f.toml",
            no_env(),
        )
        .unwrap();
        assert_eq!(c.paths.0[0].0, "live/cam1");
        assert_eq!(c.paths.0[1].0, "live/*");
    }

    #[test]
    fn missing_file() {
        let e = load(Some(Path::new("/nonexistent/finch.toml")), no_env()).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
    }
}
