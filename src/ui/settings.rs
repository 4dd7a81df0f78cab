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
        key: "view_size",
        symbol: "",
        help: "side of the training views in pixels; smaller = less arithmetic per step (the encoder still sees whole images at the image size); empty = the image size",
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

/// The augmentation's settings (the augmentation panel): empty ones take the recipe's value.
pub const AUG_SETTINGS: &[SettingDoc] = &[
    SettingDoc {
        key: "augmentation",
        symbol: "",
        help: "recipe that fills in every empty setting below: v2 (MoCo v2, PCL v2) or v1 (stronger colour changes)",
    },
    SettingDoc {
        key: "crop_min_scale",
        symbol: "",
        help: "smallest crop, as a share of the image's area: lower = views that share less",
    },
    SettingDoc {
        key: "crop_max_scale",
        symbol: "",
        help: "largest crop, as a share of the image's area",
    },
    SettingDoc {
        key: "flip",
        symbol: "",
        help: "mirror half the views left to right (yes or no)",
    },
    SettingDoc {
        key: "jitter_strength",
        symbol: "",
        help: "colour jitter: brightness, contrast and saturation change by up to this share",
    },
    SettingDoc {
        key: "jitter_prob",
        symbol: "",
        help: "chance that a view's colours are jittered at all",
    },
    SettingDoc {
        key: "hue",
        symbol: "",
        help: "largest hue shift, as a share of the colour wheel (0.5 = any colour)",
    },
    SettingDoc {
        key: "grayscale_prob",
        symbol: "",
        help: "chance that a view loses its colours",
    },
    SettingDoc {
        key: "blur_prob",
        symbol: "",
        help: "chance of a Gaussian blur",
    },
];

/// The keys of the augmentation that may be empty (the recipe's value).
use crate::engine::config::AUGMENTATION_KEYS as AUG_OPTIONAL;

/// What an empty augmentation setting stands for: the recipe's value, shown greyed in the
/// empty input.
pub fn recipe_text(config: &PclConfig, key: &str) -> String {
    let recipe = config.augmentation.recipe(config.image_size);
    let value = serde_json::to_value(recipe).expect("plain data");
    match key {
        "crop_min_scale" => value["crop_scale"][0].to_string(),
        "crop_max_scale" => value["crop_scale"][1].to_string(),
        "flip" => if recipe.flip { "yes" } else { "no" }.into(),
        k => match &value[k] {
            serde_json::Value::Null => String::new(),
            v => v.to_string(),
        },
    }
}

/// The settings a teacher varies in a lesson, shown beside the presets; the rest are under
/// "Advanced".
pub const LESSON_KEYS: [&str; 4] = ["minutes", "proto_weight", "num_clusters", "tau"];

/// The plain name of a setting a lesson varies (the key stays the input's name).
pub fn plain_label(key: &str) -> &'static str {
    match key {
        "minutes" => "Minutes",
        "proto_weight" => "Prototype weight",
        "num_clusters" => "Clusters per level",
        "tau" => "Temperature",
        _ => "",
    }
}

/// A preset in plain words: what it does and how long it takes.
pub fn preset_words(p: crate::engine::config::Preset) -> &'static str {
    use crate::engine::config::Preset;
    match p {
        Preset::Quick => {
            "2 minutes: a small encoder and three levels of clusters. What a workshop sees first."
        }
        Preset::Thorough => "10 minutes: a wider encoder, five times the training.",
        Preset::InfoNce => "2 minutes: the quick demo without prototypes, the baseline (MoCo).",
    }
}

/// The setting `key` of `config` as the text of its input.
pub fn setting_text(config: &PclConfig, key: &str) -> String {
    let value = serde_json::to_value(config).expect("plain data");
    match &value[key] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
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
        "augmentation" => return Some("v1 or v2".into()),
        "flip" => return Some("yes or no; empty = the recipe's".into()),
        "view_size" => return Some("from 16 up to the image size (32); empty = 32".into()),
        _ => {}
    }
    let l = LIMITS.iter().find(|l| l.key == key)?;
    let from = if l.open_min { "above" } else { "from" };
    let mut words = format!("{from} {} up to {}", l.min, l.max);
    if AUG_OPTIONAL.contains(&key) {
        words.push_str("; empty = the recipe's");
    }
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
        ("queue_size" | "minutes" | "view_size", _) if text.is_empty() => serde_json::Value::Null,
        (k, _) if text.is_empty() && AUG_OPTIONAL.contains(&k) => serde_json::Value::Null,
        ("flip", _) => match text.to_lowercase().as_str() {
            "yes" | "true" | "on" => true.into(),
            "no" | "false" | "off" => false.into(),
            _ => return Err(format!("{key}: yes or no")),
        },
        ("augmentation", _) => match text.to_lowercase().as_str() {
            "v1" => "v1".into(),
            "v2" => "v2".into(),
            _ => return Err(format!("{key}: v1 or v2")),
        },
        (k, _) if AUG_OPTIONAL.contains(&k) => text
            .parse::<f64>()
            .map_err(|_| format!("{key}: '{text}' is not a number"))?
            .into(),
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
        for s in SETTINGS.iter().chain(AUG_SETTINGS) {
            let text = setting_text(&c, s.key);
            assert!(with_setting(&c, s.key, &text).is_ok(), "{}", s.key);
        }
    }

    #[test]
    fn the_lesson_settings_exist_and_each_preset_says_how_long_it_takes() {
        for key in LESSON_KEYS {
            assert!(SETTINGS.iter().any(|s| s.key == key), "{key}");
            assert!(!plain_label(key).is_empty(), "{key} has a plain name");
        }
        for p in crate::engine::config::Preset::ALL {
            let minutes = p.config().minutes.expect("presets have a budget");
            let words = preset_words(p);
            assert!(words.starts_with(&format!("{minutes} minutes:")), "{words}");
        }
    }

    #[test]
    fn augmentation_settings_are_empty_for_the_recipe_and_typed_values_override_it() {
        let c = PclConfig::default();
        assert_eq!(setting_text(&c, "hue"), "");
        assert_eq!(recipe_text(&c, "hue"), "0.1");
        assert_eq!(recipe_text(&c, "crop_min_scale"), "0.2");
        assert_eq!(recipe_text(&c, "flip"), "yes");
        let c = checked_setting(&c, "hue", "0").unwrap();
        assert_eq!((c.hue, c.aug().hue), (Some(0.0), 0.0));
        let c = checked_setting(&c, "flip", "no").unwrap();
        assert_eq!(
            (setting_text(&c, "flip").as_str(), c.aug().flip),
            ("no", false)
        );
        let c = checked_setting(&c, "augmentation", "V1").unwrap();
        assert_eq!(recipe_text(&c, "hue"), "0.4");
        assert_eq!(c.aug().hue, 0.0, "the typed value stays over the recipe's");
        let c = checked_setting(&c, "hue", " ").unwrap();
        assert_eq!((c.hue, c.aug().hue), (None, 0.4));
        let e = checked_setting(&c, "grayscale_prob", "1.5").unwrap_err();
        assert!(
            e.contains("grayscale_prob is 1.5") && e.contains("up to 1"),
            "{e}"
        );
        let e = checked_setting(&c, "flip", "maybe").unwrap_err();
        assert!(e.contains("yes or no"), "{e}");
        let c = checked_setting(&c, "crop_max_scale", "0.5").unwrap();
        let e = checked_setting(&c, "crop_min_scale", "0.8").unwrap_err();
        assert!(
            e.contains("crop_min_scale is 0.8, above crop_max_scale 0.5"),
            "{e}"
        );
        for s in AUG_SETTINGS {
            assert!(range_words(s.key).is_some(), "{} has no range words", s.key);
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
        assert_eq!(
            checked_setting(&c, "view_size", "24").unwrap().view_side(),
            24
        );
        let e = checked_setting(&c, "view_size", "48").unwrap_err();
        assert!(
            e.contains("view_size is 48") && e.contains("up to image_size"),
            "{e}"
        );
        let c = checked_setting(&c, "view_size", "").unwrap();
        assert_eq!((c.view_size, c.view_side()), (None, 32));
    }
}
