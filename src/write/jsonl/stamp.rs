//! Stamping records with the fencing token of the commit that writes them
//! ([`crate::JsonlSinkBuilder::record_token`]): the token is known only
//! under the lock, after the records were serialised, so it is spliced into
//! each line as the first member of its object.

/// `lines` (whole JSON objects, one per line) with `"field": token` as the
/// first member of each. `field` is the member name, already JSON-encoded
/// with its quotes.
pub(super) fn stamp(lines: &[u8], field: &str, token: u64) -> Vec<u8> {
    let member = format!("{field}:{token}");
    let mut out = Vec::with_capacity(lines.len() + (member.len() + 1) * 4);
    for line in lines.split_inclusive(|b| *b == b'\n') {
        // Checked at append: each line is an object, so it starts with `{`.
        let Some(rest) = line.strip_prefix(b"{") else {
            out.extend_from_slice(line);
            continue;
        };
        out.push(b'{');
        out.extend_from_slice(member.as_bytes());
        if !rest.starts_with(b"}") {
            out.push(b',');
        }
        out.extend_from_slice(rest);
    }
    out
}

/// Whether each line of `lines` is an object without a member `field`
/// (JSON-encoded, as [`stamp`] takes it): what stamping needs. A record
/// that had the member already would carry two, and readers keep the last,
/// so a stale holder's own value could pass for the token.
pub(super) fn stampable(lines: &[u8], field: &str) -> Result<(), &'static str> {
    let name: String = serde_json::from_str(field).unwrap_or_default();
    for line in lines.split_inclusive(|b| *b == b'\n') {
        if !line.starts_with(b"{") {
            return Err("must be JSON objects to carry the token");
        }
        let members: std::collections::HashMap<String, serde::de::IgnoredAny> =
            serde_json::from_slice(line).map_err(|_| "must be JSON objects to carry the token")?;
        if members.contains_key(&name) {
            return Err("already have a member named as the token field; rename one of them");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_object_gets_the_token_first_and_stays_valid_json() {
        let lines = b"{\"a\":1}\n{}\n{\"b\":\"x\\ny\"}\n";
        let out = stamp(lines, "\"lock_token\"", 42);
        let text = String::from_utf8(out).unwrap();
        let values: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(values.len(), 3);
        for v in &values {
            assert_eq!(v["lock_token"], 42);
        }
        assert_eq!(values[0]["a"], 1);
        assert_eq!(values[2]["b"], "x\ny");
        assert!(stampable(lines, "\"lock_token\"").is_ok());
        assert!(stampable(b"{}\n[1]\n", "\"lock_token\"").is_err());
        assert!(stampable(b"{\"lock_token\":1}\n", "\"lock_token\"").is_err());
        assert!(stampable(b"{\"x\":\"lock_token\"}\n", "\"lock_token\"").is_ok());
    }
}
