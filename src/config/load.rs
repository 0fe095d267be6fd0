//! Loading a configuration: reading the file, parsing the TOML, and the
//! checks serde cannot make, each failure a [`ConfigError`] naming the
//! file, line and key.

use super::locate::{key_at_line, line_in_array_table, line_of_key, line_of_offset, line_of_table};
use super::Config;
use crate::zones::special;
use hickory_proto::rr::Name;
use std::path::{Path, PathBuf};

/// One problem with a configuration file, printed on one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Syntax error, unknown key or bad value, located in the file.
    #[error("{path}:{line}: {key}{message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The key, with a trailing ": " when known.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// The configuration used without `--config`.
    pub fn embedded_default() -> Config {
        Config {
            base_dir: PathBuf::from("."),
            ..Config::default()
        }
    }

    /// Reads and validates a file; every error found is returned.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            vec![ConfigError::Read {
                path: path.display().to_string(),
                source,
            }]
        })?;
        let mut cfg = Config::parse(&text, &path.display().to_string())?;
        cfg.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        // Anchor files are read relative to the config's directory, so
        // they are checked once that is known.
        if cfg.dnssec.validation {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let errs: Vec<ConfigError> = cfg
                .dnssec
                .anchor_paths(&cfg.base_dir)
                .iter()
                .filter_map(|f| crate::validate::anchors::parse_file(Path::new(f)).err())
                .map(|e| ConfigError::Invalid {
                    path: path.display().to_string(),
                    line: line_of_key(&text, "trust_anchor_files"),
                    key: "trust_anchor_files: ".into(),
                    message: e.to_string(),
                })
                .collect();
            if !errs.is_empty() {
                return Err(errs);
            }
        }
        Ok(cfg)
    }

    /// Parses and validates TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &str) -> Result<Config, Vec<ConfigError>> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of_offset(text, s.start)).unwrap_or(1);
            let key = key_at_line(text, line)
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            vec![ConfigError::Invalid {
                path: path.to_string(),
                line,
                key,
                message: e.message().replace('\n', " "),
            }]
        })?;
        let errors = cfg.validate(text, path);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    fn validate(&self, text: &str, path: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut bad = |key: &str, message: String| {
            errs.push(ConfigError::Invalid {
                path: path.to_string(),
                line: line_of_key(text, key),
                key: format!("{key}: "),
                message,
            })
        };
        if self.server.listen.is_empty() {
            bad("listen", "at least one address is needed".into());
        }
        if self.server.udp_payload_size < 512 {
            bad("udp_payload_size", "must be at least 512".into());
        }
        if self.resolver.edns_payload < 512 {
            bad("edns_payload", "must be at least 512".into());
        }
        if self.server.tcp_max_connections == 0 {
            bad("tcp_max_connections", "must be at least 1".into());
        }
        if self.server.tcp_max_inflight == 0 {
            bad("tcp_max_inflight", "must be at least 1".into());
        }
        if self.resolver.upstream_port == 0 {
            bad("upstream_port", "must not be 0".into());
        }
        if self.resolver.max_pending == 0 {
            bad("max_pending", "must be at least 1".into());
        }
        if self.resolver.max_upstream_queries == 0 {
            bad("max_upstream_queries", "must be at least 1".into());
        }
        if !self.server.cookie_secret.is_empty() {
            if let Err(e) = crate::cookies::parse_secret(&self.server.cookie_secret) {
                bad("cookie_secret", e);
            }
        }
        if self.server.ratelimit.ipv4_prefix_length > 32 {
            bad("ipv4_prefix_length", "must be at most 32".into());
        }
        if self.server.ratelimit.ipv6_prefix_length > 128 {
            bad("ipv6_prefix_length", "must be at most 128".into());
        }
        for x in &self.resolver.special_use_exclude {
            match Name::from_ascii(x) {
                Ok(n) if special::origins().iter().any(|o| n.zone_of(o)) => {}
                Ok(_) => bad(
                    "special_use_exclude",
                    format!("{x:?} is not a special-use zone nor above one"),
                ),
                Err(e) => bad(
                    "special_use_exclude",
                    format!("{x:?} is not a domain name: {e}"),
                ),
            }
        }
        for x in &self.dnssec.negative_trust_anchors {
            if let Err(e) = Name::from_ascii(x) {
                bad(
                    "negative_trust_anchors",
                    format!("{x:?} is not a domain name: {e}"),
                );
            }
        }
        if self.dnssec.max_signatures_per_rrset == 0 || self.dnssec.max_keys_per_tag == 0 {
            bad(
                "max_signatures_per_rrset",
                "max_signatures_per_rrset and max_keys_per_tag must be at least 1".into(),
            );
        }
        if self.cache.min_ttl > self.cache.max_ttl {
            bad("min_ttl", "must not exceed max_ttl".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            bad("level", format!("{:?} is not a log level", self.log.level));
        }
        if let Some(r) = &self.cache.redis {
            for (key, message) in r.check() {
                errs.push(ConfigError::Invalid {
                    path: path.to_string(),
                    line: line_of_key(text, key),
                    key: format!("{key}: "),
                    message,
                });
            }
        }
        for (i, key, message) in crate::resolve::forward::check(&self.forward) {
            errs.push(ConfigError::Invalid {
                path: path.to_string(),
                line: line_in_array_table(text, "forward", i, key),
                key: format!("{key}: "),
                message,
            });
        }
        if let Some(t) = &self.tls {
            // A missing key has no line of its own: point at [tls].
            let at = line_of_table(text, "tls");
            for (k, v) in [("cert", &t.cert), ("key", &t.key)] {
                if v.is_none() {
                    errs.push(ConfigError::Invalid {
                        path: path.to_string(),
                        line: at,
                        key: "[tls]: ".into(),
                        message: format!("{k} is missing"),
                    });
                }
            }
        } else if self.needs_tls() {
            let key = if self.server.tls_listen.is_empty() {
                "https_listen"
            } else {
                "tls_listen"
            };
            errs.push(ConfigError::Invalid {
                path: path.to_string(),
                line: line_of_key(text, key),
                key: format!("{key}: "),
                message: "needs a [tls] section with cert and key".into(),
            });
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = "[server]\nlisten = [\"127.0.0.1:53\"]\nlisten_typo = 3\n";
        let errs = Config::parse(text, "x.toml").unwrap_err();
        let msg = errs[0].to_string();
        assert!(msg.starts_with("x.toml:3: listen_typo: "), "{msg}");
    }

    #[test]
    fn bad_address_names_line() {
        let text = "[server]\n\nlisten = [\"127.0.0.1\"]\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert!(msg.starts_with("x.toml:3: listen: "), "{msg}");
    }

    #[test]
    fn syntax_error_names_line() {
        let text = "[server]\nthreads = 2\n[log\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert!(msg.starts_with("x.toml:3:"), "{msg}");
    }

    #[test]
    fn semantic_error_names_line_of_key() {
        let text = "[cache]\nmax_ttl = 10\nmin_ttl = 20\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert_eq!(msg, "x.toml:3: min_ttl: must not exceed max_ttl");
    }

    #[test]
    fn tls_listener_without_tls_section_is_located() {
        let text = "[server]\nlisten = [\"127.0.0.1:53\"]\ntls_listen = [\"127.0.0.1:853\"]\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert_eq!(
            msg,
            "x.toml:3: tls_listen: needs a [tls] section with cert and key"
        );
        let text = "[server]\nhttps_listen = [\"127.0.0.1:443\"]\n\n[tls]\ncert = \"c.pem\"\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert_eq!(msg, "x.toml:4: [tls]: key is missing");
    }

    #[test]
    fn bad_proxy_cidr_names_line() {
        let text = "[server]\nproxy_protocol_from = [\"10.0.0.0/33\"]\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert!(msg.starts_with("x.toml:2: proxy_protocol_from: "), "{msg}");
    }

    #[test]
    fn forward_zone_errors_name_key_and_line() {
        let text = "[[forward]]\nzone = \"corp.example.\"\nservers = [\"192.0.2.1\"]\n\n[[forward]]\nzone = \"corp.example\"\nservers = [\"192.0.2.1:99999\"]\n";
        let errs = Config::parse(text, "x.toml").unwrap_err();
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].starts_with("x.toml:6: zone: "), "{msgs:?}");
        assert!(msgs[1].starts_with("x.toml:7: servers: "), "{msgs:?}");
    }

    #[test]
    fn redis_section_parses_and_a_bad_url_is_located() {
        let text = "[cache.redis]\nurl = \"redis://10.0.0.1:6380/2\"\ntimeout = \"20ms\"\n";
        let cfg = Config::parse(text, "x.toml").unwrap();
        let r = cfg.cache.redis.unwrap();
        assert_eq!(r.timeout.0, Duration::from_millis(20));
        assert_eq!(r.key_prefix, "resolvd:", "defaults fill the rest");
        let text = "[cache]\nmax_ttl = 600\n\n[cache.redis]\nurl = \"http://10.0.0.1\"\n";
        let msg = Config::parse(text, "x.toml").unwrap_err()[0].to_string();
        assert!(msg.starts_with("x.toml:5: url: "), "{msg}");
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let text = include_str!("../../config/resolvd.toml");
        Config::parse(text, "config/resolvd.toml").unwrap();
    }
}
