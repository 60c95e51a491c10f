//! `multipart/*` bodies (RFC 2046 5.1), as carried by resource-list NOTIFYs (RFC 4662) and by
//! OCS-era INVITEs with `ms-proxy-2007fallback` parts.

use crate::scan::{split_params, trim, unquote};

/// One part of a multipart body: its header block (raw) and its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub headers: &'a [u8],
    pub body: &'a [u8],
}

impl<'a> Part<'a> {
    /// The value of the part header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.split(|&c| c == b'\n').find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&c| c == b':')?;
            trim(&line[..colon]).eq_ignore_ascii_case(name.as_bytes()).then(|| trim(&line[colon + 1..]))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultipartError {
    NotMultipart,
    NoBoundary,
    /// The closing delimiter `--boundary--` is missing.
    Unterminated,
}

/// Whether a Content-Type value is `multipart/...`.
pub fn is_multipart(content_type: &[u8]) -> bool {
    let (media, _) = split_params(content_type);
    media.len() > 10 && media[..10].eq_ignore_ascii_case(b"multipart/")
}

/// Splits `body` into its parts, using the boundary of `content_type`.
pub fn parts<'a>(content_type: &[u8], body: &'a [u8]) -> Result<Vec<Part<'a>>, MultipartError> {
    if !is_multipart(content_type) {
        return Err(MultipartError::NotMultipart);
    }
    let (_, params) = split_params(content_type);
    let boundary = params.get("boundary").flatten().map(unquote).ok_or(MultipartError::NoBoundary)?;
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(MultipartError::NoBoundary);
    }
    let mut delim = Vec::with_capacity(boundary.len() + 2);
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(&boundary);
    let finder = memchr::memmem::Finder::new(&delim);

    // Delimiters sit at the start of the body or after a line break.
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(i) = finder.find(&body[from..]) {
        let at = from + i;
        if at == 0 || body[at - 1] == b'\n' {
            starts.push(at);
        }
        from = at + delim.len();
    }
    let mut out = Vec::new();
    for pair in starts.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let after = &body[a + delim.len()..];
        if after.starts_with(b"--") {
            break;
        }
        // Rest of the delimiter line, then the part up to the line break before the next delimiter.
        let line_end = match after.iter().position(|&c| c == b'\n') {
            Some(n) => a + delim.len() + n + 1,
            None => return Err(MultipartError::Unterminated),
        };
        let mut end = b;
        if end > line_end && body[end - 1] == b'\n' {
            end -= 1;
            if end > line_end && body[end - 1] == b'\r' {
                end -= 1;
            }
        }
        let part = &body[line_end.min(end)..end];
        let (headers, content) = match memchr::memmem::find(part, b"\r\n\r\n") {
            Some(h) => (&part[..h], &part[h + 4..]),
            None if part.starts_with(b"\r\n") => (&part[..0], &part[2..]),
            None => match memchr::memmem::find(part, b"\n\n") {
                Some(h) => (&part[..h], &part[h + 2..]),
                None => (&part[..0], part),
            },
        };
        out.push(Part { headers, body: content });
    }
    let closed = starts.last().is_some_and(|&l| body[l + delim.len()..].starts_with(b"--"));
    if !closed {
        return Err(MultipartError::Unterminated);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails loudly where a value is missing
mod tests {
    use super::*;

    #[test]
    fn two_parts() {
        let ct = b"multipart/mixed;boundary=\"7a9cbec02ceef655\"";
        let body = b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\n\r\nhello\r\n--7a9cbec02ceef655\r\nContent-Type: application/sdp\r\nContent-Disposition: session\r\n\r\nv=0\r\n\r\n--7a9cbec02ceef655--\r\n";
        let p = parts(ct, body).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].header("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(p[0].body, b"hello");
        assert_eq!(p[1].body, b"v=0\r\n");
        assert_eq!(p[1].header("Content-Disposition"), Some(&b"session"[..]));
    }

    #[test]
    fn errors() {
        assert_eq!(parts(b"text/plain", b""), Err(MultipartError::NotMultipart));
        assert_eq!(parts(b"multipart/mixed", b""), Err(MultipartError::NoBoundary));
        assert_eq!(parts(b"multipart/mixed;boundary=x", b"--x\r\n\r\nabc"), Err(MultipartError::Unterminated));
    }
}
