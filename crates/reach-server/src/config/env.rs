//! `REACH_*` environment variables over the configuration: each names a
//! key (`REACH_LIMITS__API_PER_MINUTE` is `limits.api_per_minute`) and its
//! value takes the type the key has. Variables that name no key are left
//! alone (other tools' `REACH_*`); a value of the wrong type is an error
//! naming the variable, never a silent default.

use anyhow::{Context, Result, bail};

use super::Config;

impl Config {
    /// Applies `REACH_*` overrides. Nested keys use double underscores:
    /// `REACH_LIMITS__API_PER_MINUTE=500`, `REACH_LISTEN=0.0.0.0:8080`.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        let mut table = toml::Table::try_from(&*self).context("serialising config")?;
        let mut changed = false;
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("REACH_") else {
                continue;
            };
            let path: Vec<String> = key.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if !known_key(&table, &path) {
                continue; // Other tools' REACH_* variables (the CLI's, for one) are not ours.
            }
            set_path(&mut table, &path, &value)
                .with_context(|| format!("environment variable {name}"))?;
            changed = true;
        }
        if changed {
            *self = table.try_into().context("applying REACH_* environment")?;
        }
        Ok(())
    }
}

fn known_key(table: &toml::Table, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => table.contains_key(last) || matches!(last.as_str(), "oidc"),
        [first, rest @ ..] => match table.get(first) {
            Some(toml::Value::Table(inner)) => known_key(inner, rest),
            _ => first == "auth" && rest.first().map(String::as_str) == Some("oidc"),
        },
    }
}

fn set_path(table: &mut toml::Table, path: &[String], raw: &str) -> Result<()> {
    match path {
        [] => bail!("empty key"),
        [last] => {
            let value = match table.get(last) {
                Some(toml::Value::Integer(_)) => toml::Value::Integer(
                    raw.parse()
                        .with_context(|| format!("'{raw}' is not an integer"))?,
                ),
                Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
                    raw.parse()
                        .with_context(|| format!("'{raw}' is not true or false"))?,
                ),
                Some(toml::Value::Array(_)) => toml::Value::Array(
                    raw.split(',')
                        .map(|s| toml::Value::String(s.trim().to_string()))
                        .collect(),
                ),
                _ => toml::Value::String(raw.to_string()),
            };
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let inner = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match inner {
                toml::Value::Table(inner) => set_path(inner, rest, raw),
                _ => bail!("{first} is not a section"),
            }
        }
    }
}
