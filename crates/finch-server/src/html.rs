//! Escaping for the HTML pages the worker renders (the status page, the HLS player page):
//! every value that came from outside (path names, peers, error messages) goes through it.

/// `s` safe inside HTML text and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_and_quotes_are_escaped() {
        assert_eq!(
            super::escape("<a href='x' t=\"y\">&"),
            "&lt;a href=&#39;x&#39; t=&quot;y&quot;&gt;&amp;"
        );
    }
}
