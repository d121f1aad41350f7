//! What a boot reported: the scenario's `@@step`, `@@file` and `@@done` lines (vm/helpers.sh
//! prints them on the serial console), decoded.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};

/// What one boot reported.
#[derive(Debug, Default)]
pub struct Report {
    /// Step name -> (exit code, combined stdout and stderr).
    pub steps: BTreeMap<String, (i32, String)>,
    /// File name -> contents (None when the file did not exist in the VM).
    pub files: BTreeMap<String, Option<String>>,
    /// The scenario script ran to its end.
    pub done: bool,
    pub console: String,
}

impl Report {
    pub fn parse(console: &str) -> Result<Report> {
        let mut report = Report { console: console.to_string(), ..Default::default() };
        for line in console.lines() {
            let line = line.trim_end_matches('\r');
            // Kernel messages may share the line start; markers are found anywhere.
            let Some(start) = line.find("@@") else { continue };
            let mut fields = line[start..].splitn(4, ' ');
            match fields.next() {
                Some("@@step") => {
                    let name = fields.next().unwrap_or_default().to_string();
                    let rc: i32 = fields.next().unwrap_or("-1").parse().unwrap_or(-1);
                    let output = decode_base64(fields.next().unwrap_or(""))?;
                    report.steps.insert(name, (rc, output));
                }
                Some("@@file") => {
                    let name = fields.next().unwrap_or_default().to_string();
                    let body = fields.next().unwrap_or("-");
                    let contents = if body == "-" { None } else { Some(decode_base64(body)?) };
                    report.files.insert(name, contents);
                }
                Some("@@done") => report.done = true,
                _ => {}
            }
        }
        Ok(report)
    }

    pub fn step(&self, name: &str) -> Option<&(i32, String)> {
        self.steps.get(name)
    }

    pub fn file(&self, name: &str) -> Option<&str> {
        self.files.get(name).and_then(|f| f.as_deref())
    }
}

fn decode_base64(text: &str) -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in text.trim().as_bytes() {
        if c == b'=' {
            break;
        }
        let value = ALPHABET.iter().position(|&a| a == c).ok_or_else(|| anyhow!("bad base64 byte {c}"))?;
        acc = (acc << 6) | value as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parsing() {
        let console =
            "booting\n[  1.0] x @@step ps 0 aGVsbG8K\r\n@@file log -\n@@file j eyJhIjoxfQ==\n@@done\n";
        let report = Report::parse(console).unwrap();
        assert_eq!(report.step("ps"), Some(&(0, "hello\n".to_string())));
        assert_eq!(report.files.get("log"), Some(&None));
        assert_eq!(report.file("j"), Some("{\"a\":1}"));
        assert!(report.done);
        assert!(!Report::parse("@@step a 1 \n").unwrap().done);
    }
}
