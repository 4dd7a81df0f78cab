//! The settings panel's rules, free of any DOM type (tested natively): what each setting is,
//! how it shows in its input and how an input's text changes the settings.

use crate::engine::PclConfig;
use crate::engine::config::LIMITS;

/// One editable setting: its config key (the input's `name`), the formula symbol it sets,
/// and what it does in one line.
pub struct SettingDoc {
    pub key: &'static str,
    pub symbol: &'static str,
    pub help: &'static str,
}

pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        key: "minutes",
        symbol: "",
        help: "time budget: the run plans its epochs from its measured speed so that it ends in this many minutes; empty = train the epochs below",
    },
    SettingDoc {
        key: "epochs",
        symbol: "",
        help: "passes over all images (with a time budget: the first plan)",
    },
    SettingDoc {
        key: "warmup_epochs",
        symbol: "",
        help: "epochs of InfoNCE only before the first E-step (clusters need a rough embedding first)",
    },
    SettingDoc {
        key: "num_clusters",
        symbol: "K, M",
        help: "clusters per level, coarse to fine, comma-separated; M = how many levels; empty = from the number of images",
    },
    SettingDoc {
        key: "tau",
        symbol: "τ",
        help: "temperature of InfoNCE, and the mean of the concentrations φ",
    },
    SettingDoc {
        key: "queue_size",
        symbol: "r",
        help: "negatives kept in the queue; empty = at most half the images",
    },
    SettingDoc {
        key: "ema_momentum",
        symbol: "m",
        help: "momentum of the key encoder: how slowly the keys change",
    },
    SettingDoc {
        key: "proto_weight",
        symbol: "",
        help: "weight of the ProtoNCE term; 0 = InfoNCE only (MoCo)",
    },
    SettingDoc {
        key: "proto_mode",
        symbol: "",
        help: "full: every prototype of a level in the softmax; sampled: r of them (the paper's choice)",
    },
    SettingDoc {
        key: "batch_size",
        symbol: "",
        help: "images per step (capped to an eighth of small sets)",
    },
    SettingDoc {
        key: "lr",
        symbol: "η",
        help: "learning rate of SGD (momentum 0.9, cosine schedule)",
    },
    SettingDoc {
        key: "kmeans_restarts",
        symbol: "",
        help: "k-means runs per level; the lowest inertia wins",
    },
    SettingDoc {
        key: "width",
        symbol: "",
        help: "channels of the encoder's first layer (the rest double)",
    },
    SettingDoc {
        key: "feature_dim",
        symbol: "d",
        help: "size of the embedding v",
    },
    SettingDoc {
        key: "norm",
        symbol: "",
        help: "batch: BatchNorm per chunk of the batch, keys shuffled across chunks (the paper's choice); group: GroupNorm",
    },
    SettingDoc {
        key: "bn_chunks",
        symbol: "",
        help: "chunks of the batch with their own BatchNorm statistics (at least 2)",
    },
    SettingDoc {
        key: "seed",
        symbol: "",
        help: "same seed, same run (on the CPU)",
    },
];

/// The setting `key` of `config` as the text of its input.
pub fn setting_text(config: &PclConfig, key: &str) -> String {
    let value = serde_json::to_value(config).expect("plain data");
    match &value[key] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.to_lowercase(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        v => v.to_string(),
    }
}

/// The allowed values of a setting, shown beside its input: "1 to 128", "above 0 up to 10".
pub fn range_words(key: &str) -> Option<String> {
    match key {
        "norm" => return Some("batch or group".into()),
        "proto_mode" => return Some("full or sampled".into()),
        "seed" => return Some("any whole number".into()),
        _ => {}
    }
    let l = LIMITS.iter().find(|l| l.key == key)?;
    let from = if l.open_min { "above" } else { "from" };
    let mut words = format!("{from} {} up to {}", l.min, l.max);
    if key == "num_clusters" {
        let levels = LIMITS.iter().find(|l| l.key == "levels")?;
        words = format!("{} to {} each, at most {} levels", l.min, l.max, levels.max);
    }
    Some(words)
}

/// `config` with `key` set from the text the user typed, within the setting's bounds, or why
/// it cannot be (checked as the user types).
pub fn checked_setting(config: &PclConfig, key: &str, text: &str) -> Result<PclConfig, String> {
    let c = with_setting(config, key, text)?;
    c.check().map_err(|e| e.to_string())?;
    Ok(c)
}

/// `config` with `key` set from the text the user typed, or why it cannot be.
pub fn with_setting(config: &PclConfig, key: &str, text: &str) -> Result<PclConfig, String> {
    let mut value = serde_json::to_value(config).expect("plain data");
    let text = text.trim();
    let new = match (key, &value[key]) {
        ("num_clusters", _) => serde_json::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    t.parse::<u64>()
                        .map(Into::into)
                        .map_err(|_| format!("{key}: '{t}' is not a whole number"))
                })
                .collect::<Result<_, _>>()?,
        ),
        ("queue_size" | "minutes", _) if text.is_empty() => serde_json::Value::Null,
        ("minutes", _) => text
            .parse::<f64>()
            .map_err(|_| format!("{key}: '{text}' is not a number of minutes"))?
            .into(),
        ("norm", _) => match text.to_lowercase().as_str() {
            "batch" => "batch".into(),
            "group" => "group".into(),
            _ => return Err(format!("{key}: batch or group")),
        },
        ("proto_mode", _) => match text.to_lowercase().as_str() {
            "full" => "full".into(),
            "sampled" => "sampled".into(),
            _ => return Err(format!("{key}: full or sampled")),
        },
        (_, serde_json::Value::Number(n)) if n.is_f64() => text
            .parse::<f64>()
            .map_err(|_| format!("{key}: '{text}' is not a number"))?
            .into(),
        _ => text
            .parse::<u64>()
            .map_err(|_| format!("{key}: '{text}' is not a whole number"))?
            .into(),
    };
    value[key] = new;
    if key == "epochs" {
        // Epochs typed by hand are the plan: a preset's time budget no longer re-plans them.
        value["minutes"] = serde_json::Value::Null;
    }
    serde_json::from_value(value).map_err(|e| format!("{key}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_their_inputs() {
        let c = PclConfig::default();
        assert_eq!(setting_text(&c, "tau"), "0.2");
        assert_eq!(setting_text(&c, "queue_size"), "");
        let c = with_setting(&c, "num_clusters", "10, 40,100").unwrap();
        assert_eq!(c.num_clusters, vec![10, 40, 100]);
        assert_eq!(setting_text(&c, "num_clusters"), "10, 40, 100");
        let c = with_setting(&c, "tau", "0.1").unwrap();
        assert_eq!(c.tau, 0.1);
        let c = with_setting(&c, "proto_mode", "sampled").unwrap();
        assert_eq!(setting_text(&c, "proto_mode"), "sampled");
        assert_eq!(
            with_setting(&c, "queue_size", "64").unwrap().queue_size,
            Some(64)
        );
        assert!(
            with_setting(&c, "epochs", "ten")
                .unwrap_err()
                .contains("whole number")
        );
        for s in SETTINGS {
            let text = setting_text(&c, s.key);
            assert!(with_setting(&c, s.key, &text).is_ok(), "{}", s.key);
        }
    }

    #[test]
    fn every_setting_says_its_range_and_typing_past_it_says_why() {
        for s in SETTINGS {
            assert!(range_words(s.key).is_some(), "{} has no range words", s.key);
        }
        assert_eq!(range_words("width").unwrap(), "from 1 up to 128");
        assert_eq!(range_words("tau").unwrap(), "above 0 up to 10");
        assert_eq!(
            range_words("num_clusters").unwrap(),
            "2 to 50000 each, at most 8 levels"
        );
        let c = PclConfig::default();
        let e = checked_setting(&c, "width", "2048").unwrap_err();
        assert!(e.contains("width is 2048") && e.contains("128"), "{e}");
        let e = checked_setting(&c, "num_clusters", "10, 1").unwrap_err();
        assert!(e.contains("num_clusters is 1"), "{e}");
        assert!(checked_setting(&c, "tau", "0").is_err());
        assert_eq!(checked_setting(&c, "width", "16").unwrap().width, 16);
    }
}
