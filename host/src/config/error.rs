//! Config errors that say where, what, and how to fix it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the problem can be pinned to one.
    pub line: Option<usize>,
    /// The key, as a path from the top of the file (`routes[2].upstream`).
    pub key: String,
    /// What is wrong.
    pub what: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.what)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Everything wrong with a config file; loading stops at the first stage that
/// found problems (syntax, then meaning, then plugins).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn single(p: Problem) -> Self {
        Self { problems: vec![p] }
    }

    /// A problem of the whole `file` (no line, no key): it cannot be read,
    /// or its store cannot be.
    pub fn whole(file: impl Into<std::path::PathBuf>, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::single(Problem { file: file.into(), line: None, key: String::new(), what: what.into(), fix: fix.into() })
    }
}

/// Collects problems while a config is checked, resolving byte spans to lines.
#[derive(Debug)]
pub struct Problems<'a> {
    file: &'a Path,
    source: &'a str,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub fn new(file: &'a Path, source: &'a str) -> Self {
        Self { file, source, list: Vec::new() }
    }

    pub fn file(&self) -> &Path {
        self.file
    }

    pub fn source(&self) -> &'a str {
        self.source
    }

    /// Records a problem at a span of the source (`None` when it has none).
    pub fn at(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let line = span.map(|s| line_of(self.source, s.start));
        self.at_line(line, key, what, fix);
    }

    /// Records a problem at a known line.
    pub fn at_line(
        &mut self,
        line: Option<usize>,
        key: impl Into<String>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.list.push(Problem {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            what: what.into(),
            fix: fix.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn into_result<T>(self, value: T) -> Result<T, ConfigError> {
        if self.list.is_empty() { Ok(value) } else { Err(ConfigError { problems: self.list }) }
    }

    pub fn into_error(self) -> ConfigError {
        ConfigError { problems: self.list }
    }
}

/// 1-based line of a byte offset.
pub fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Turns a TOML syntax or type error into a problem with a line and a fix.
pub fn from_toml(file: &Path, source: &str, err: &toml::de::Error) -> Problem {
    let line = err.span().map(|s| line_of(source, s.start));
    let what = err.message().trim().to_owned();
    let fix = if what.starts_with("unknown field") {
        "remove the key or correct its spelling; the keys this table accepts are listed above, \
         and all are described in docs/configuration.md"
    } else if what.starts_with("missing field") {
        "add the key; docs/configuration.md describes it"
    } else if what.starts_with("unknown variant") {
        "use one of the values listed above"
    } else if what.starts_with("invalid type") {
        "give the value the type shown above (strings are quoted, tables use { } or [section])"
    } else {
        "correct the TOML at this line; docs/configuration.md shows every key with an example"
    };
    Problem { file: file.to_path_buf(), line, key: String::new(), what, fix: fix.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        let src = "a = 1\nb = 2\nc = 3\n";
        assert_eq!(line_of(src, 0), 1);
        assert_eq!(line_of(src, 6), 2);
        assert_eq!(line_of(src, 100), 4);
    }

    #[test]
    fn display_has_file_line_key_and_fix() {
        let p = Problem {
            file: "gw.toml".into(),
            line: Some(3),
            key: "routes[0].upstream".into(),
            what: "unknown upstream `x`".into(),
            fix: "define [upstreams.x]".into(),
        };
        assert_eq!(
            p.to_string(),
            "error: gw.toml:3: routes[0].upstream: unknown upstream `x`\n  fix: define [upstreams.x]"
        );
    }
}
