//! Lessons a teacher hands out as a link: the page's address may ask for the sample set (whole or
//! a part) and a session file that lies next to the site, e.g.
//! `?sample=64&session=lessons/emoji-64.pclstudio`. Only paths on the page's own origin are
//! opened; anything that names another origin is refused before any request.

/// Largest lesson session the page downloads.
pub const MAX_LESSON_BYTES: u64 = crate::intake::MAX_SESSION_BYTES;

/// Sample-set sizes a link may ask for (the settings card offers the same range).
pub const SAMPLE_RANGE: std::ops::RangeInclusive<usize> = 16..=50_000;

/// What the address asks the page to open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lesson {
    /// `Some(None)`: the whole sample set; `Some(Some(n))`: `n` images spread over its groups.
    pub sample: Option<Option<usize>>,
    /// A session file's path relative to the page (or absolute on its origin).
    pub session: Option<String>,
}

impl Lesson {
    /// Reads the decoded `sample` and `session` parameters; `Ok(None)` when neither is there.
    pub fn from_params(
        sample: Option<&str>,
        session: Option<&str>,
    ) -> Result<Option<Self>, String> {
        if sample.is_none() && session.is_none() {
            return Ok(None);
        }
        let sample = sample.map(parse_sample).transpose()?;
        let session = session.map(check_session_path).transpose()?;
        Ok(Some(Self { sample, session }))
    }

    /// Words for the notice while the lesson opens.
    pub fn words(&self) -> String {
        let images = match self.sample {
            Some(None) => "the whole sample set".to_string(),
            Some(Some(n)) => format!("{n} images of the sample set"),
            None => "the images it was trained on (load them below)".to_string(),
        };
        match &self.session {
            Some(path) => format!("Opening the lesson {path} on {images}."),
            None => format!("Loading {images}."),
        }
    }
}

fn parse_sample(value: &str) -> Result<Option<usize>, String> {
    let value = value.trim();
    if value.is_empty() || value == "all" {
        return Ok(None);
    }
    match value.parse::<usize>() {
        Ok(n) if SAMPLE_RANGE.contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "the link asks for sample={value:?}: use 'all' or a number of images from {} to {}",
            SAMPLE_RANGE.start(),
            SAMPLE_RANGE.end()
        )),
    }
}

/// A path on the page's own origin: no scheme (`https:`, `data:`, `javascript:`), no
/// protocol-relative `//host`, no backslashes (which browsers read as slashes), no control
/// characters. The browser checks the resolved origin once more before fetching.
fn check_session_path(value: &str) -> Result<String, String> {
    let refuse = |why: &str| {
        Err(format!(
            "the link's session {value:?} was not opened: {why}; a lesson must lie next to the \
             site, e.g. session=lessons/run.pclstudio"
        ))
    };
    let v = value.trim();
    if v.is_empty() {
        return refuse("it is empty");
    }
    if v.chars().any(|c| c.is_control() || c == '\\') {
        return refuse("it holds control characters or backslashes");
    }
    if v.starts_with("//") {
        return refuse("it names another origin");
    }
    // A scheme is letters, digits, + - . before the first ':' that comes before any '/', '?', '#'.
    let head = v.split(['/', '?', '#']).next().unwrap_or("");
    if head.contains(':') {
        return refuse("it names another origin");
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_parameters_no_lesson() {
        assert_eq!(Lesson::from_params(None, None), Ok(None));
    }

    #[test]
    fn sample_sizes_and_the_whole_set() {
        let l = Lesson::from_params(Some("64"), None).unwrap().unwrap();
        assert_eq!(l.sample, Some(Some(64)));
        assert_eq!(l.session, None);
        let all = Lesson::from_params(Some("all"), None).unwrap().unwrap();
        assert_eq!(all.sample, Some(None));
        for bad in ["3", "-1", "1e9", "ten", "99999999999999999999999"] {
            let e = Lesson::from_params(Some(bad), None).unwrap_err();
            assert!(e.contains("from 16 to 50000"), "{bad}: {e}");
        }
    }

    #[test]
    fn session_paths_on_the_same_origin_open() {
        for ok in [
            "lessons/emoji-64.pclstudio",
            "./lessons/a b.pclstudio",
            "/lessons/x.pclstudio",
            "../shared/x.pclstudio",
            "lessons/x.pclstudio?v=2",
            "lessons/10:30.pclstudio",
        ] {
            let l = Lesson::from_params(None, Some(ok)).unwrap().unwrap();
            assert_eq!(l.session.as_deref(), Some(ok));
            assert_eq!(l.sample, None);
        }
    }

    #[test]
    fn other_origins_and_schemes_are_refused() {
        for bad in [
            "https://evil.example/x.pclstudio",
            "HTTP://evil.example/x",
            "//evil.example/x.pclstudio",
            "\\\\evil.example\\x",
            "/\\evil.example/x",
            "javascript:alert(1)",
            "data:application/octet-stream;base64,AAAA",
            "blob:https://evil.example/1",
            "file:///etc/passwd",
            "ws://evil.example",
            "lessons/x\n.pclstudio",
            "",
            "   ",
        ] {
            let e = Lesson::from_params(Some("64"), Some(bad)).unwrap_err();
            assert!(e.contains("was not opened"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn words_say_what_opens() {
        let l = Lesson::from_params(Some("64"), Some("lessons/a.pclstudio"))
            .unwrap()
            .unwrap();
        assert_eq!(
            l.words(),
            "Opening the lesson lessons/a.pclstudio on 64 images of the sample set."
        );
        let own = Lesson::from_params(None, Some("a.pclstudio"))
            .unwrap()
            .unwrap();
        assert!(own.words().contains("load them below"));
    }
}
