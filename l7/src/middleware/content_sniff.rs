//! The media type of a body from its first bytes, following the WHATWG MIME Sniffing
//! standard as Go's `http.DetectContentType` applies it (the behaviour Traefik's
//! `contentType` middleware enables). A pure function over at most [`SNIFF_LEN`] bytes.

/// Bytes looked at; the standard's resource header length.
pub const SNIFF_LEN: usize = 512;

/// HTML tags that, after leading whitespace and in any case, mark an HTML document when
/// followed by a space or `>` (WHATWG "identifying a resource with an unknown MIME type").
const HTML_TAGS: &[&[u8]] = &[
    b"<!DOCTYPE HTML",
    b"<HTML",
    b"<HEAD",
    b"<SCRIPT",
    b"<IFRAME",
    b"<H1",
    b"<DIV",
    b"<FONT",
    b"<TABLE",
    b"<A",
    b"<STYLE",
    b"<TITLE",
    b"<B",
    b"<BODY",
    b"<BR",
    b"<P",
    b"<!--",
];

/// Signatures matched at the start of the body, `?` in a pattern standing for any byte.
const EXACT: &[(&[u8], &str)] = &[
    (b"%PDF-", "application/pdf"),
    (b"%!PS-Adobe-", "application/postscript"),
    (b"\xFE\xFF", "text/plain; charset=utf-16be"),
    (b"\xFF\xFE", "text/plain; charset=utf-16le"),
    (b"\xEF\xBB\xBF", "text/plain; charset=utf-8"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"\x00\x00\x02\x00", "image/x-icon"),
    (b"BM", "image/bmp"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"RIFF????WEBPVP", "image/webp"),
    (b"\x89PNG\x0D\x0A\x1A\x0A", "image/png"),
    (b"\xFF\xD8\xFF", "image/jpeg"),
    (b"FORM????AIFF", "audio/aiff"),
    (b"ID3", "audio/mpeg"),
    (b"OggS\x00", "application/ogg"),
    (b"MThd\x00\x00\x00\x06", "audio/midi"),
    (b"RIFF????AVI ", "video/avi"),
    (b"RIFF????WAVE", "audio/wave"),
    (b"\x1A\x45\xDF\xA3", "video/webm"),
    (b"\x00\x01\x00\x00", "font/ttf"),
    (b"OTTO", "font/otf"),
    (b"ttcf", "font/collection"),
    (b"wOFF", "font/woff"),
    (b"wOF2", "font/woff2"),
    (b"\x1F\x8B\x08", "application/x-gzip"),
    (b"PK\x03\x04", "application/zip"),
    (b"Rar!\x1A\x07\x00", "application/x-rar-compressed"),
    (b"Rar!\x1A\x07\x01\x00", "application/x-rar-compressed"),
    (b"\x00asm", "application/wasm"),
];

/// The media type of a body starting with `data` (only the first [`SNIFF_LEN`] bytes count).
pub fn detect(data: &[u8]) -> &'static str {
    let data = &data[..data.len().min(SNIFF_LEN)];
    let text = data.trim_ascii_start();
    if HTML_TAGS.iter().any(|tag| html_tag_at_start(text, tag)) {
        return "text/html; charset=utf-8";
    }
    if starts_with_ignore_case(text, b"<?xml") {
        return "text/xml; charset=utf-8";
    }
    if let Some((_, media_type)) = EXACT
        .iter()
        .find(|(pattern, _)| matches_at_start(data, pattern))
    {
        return media_type;
    }
    if is_mp4(data) {
        return "video/mp4";
    }
    if data.iter().any(|&b| is_binary(b)) {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

fn starts_with_ignore_case(data: &[u8], prefix: &[u8]) -> bool {
    data.len() >= prefix.len() && data[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn html_tag_at_start(data: &[u8], tag: &[u8]) -> bool {
    starts_with_ignore_case(data, tag) && matches!(data.get(tag.len()), Some(b' ' | b'>'))
}

fn matches_at_start(data: &[u8], pattern: &[u8]) -> bool {
    data.len() >= pattern.len() && pattern.iter().zip(data).all(|(&p, &d)| p == b'?' || p == d)
}

/// ISO base media file with an `ftyp` box naming an `mp4` brand (WHATWG "matches the
/// signature for MP4").
fn is_mp4(data: &[u8]) -> bool {
    let Some(size) = data
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    else {
        return false;
    };
    if data.len() < size || size % 4 != 0 || size < 12 || data.get(4..8) != Some(b"ftyp") {
        return false;
    }
    // The major brand, then the compatible brands after the minor version.
    std::iter::once(8)
        .chain((16..size).step_by(4))
        .any(|at| data.get(at..at + 3) == Some(b"mp4"))
}

/// Bytes that no text holds (WHATWG "binary data byte").
fn is_binary(byte: u8) -> bool {
    matches!(byte, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_found_after_whitespace_in_any_case() {
        assert_eq!(
            detect(b"  \n<!doctype html><p>x"),
            "text/html; charset=utf-8"
        );
        assert_eq!(detect(b"<html>"), "text/html; charset=utf-8");
        assert_eq!(detect(b"<p class=a>"), "text/html; charset=utf-8");
        // A tag name must end there: `<bx` is not `<b`.
        assert_eq!(detect(b"<bx>"), "text/plain; charset=utf-8");
    }

    #[test]
    fn xml_and_documents() {
        assert_eq!(detect(b"\t<?xml version"), "text/xml; charset=utf-8");
        assert_eq!(detect(b"%PDF-1.7"), "application/pdf");
        assert_eq!(detect(b"\xEF\xBB\xBFhello"), "text/plain; charset=utf-8");
    }

    #[test]
    fn images_archives_and_media_by_signature() {
        assert_eq!(detect(b"\x89PNG\r\n\x1a\n\0\0"), "image/png");
        assert_eq!(detect(b"GIF89a..."), "image/gif");
        assert_eq!(detect(b"RIFF\x10\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(detect(b"RIFF\x10\0\0\0WAVEfmt "), "audio/wave");
        assert_eq!(detect(b"\x1f\x8b\x08\0"), "application/x-gzip");
        assert_eq!(detect(b"\0asm\x01\0\0\0"), "application/wasm");
        let mut mp4 = b"\0\0\0\x18ftypisom\0\0\0\0isommp41".to_vec();
        mp4.extend_from_slice(&[0; 8]);
        assert_eq!(detect(&mp4), "video/mp4");
    }

    #[test]
    fn plain_text_unless_a_binary_byte_appears() {
        assert_eq!(detect(b"hello, world\r\n"), "text/plain; charset=utf-8");
        assert_eq!(detect("héllo".as_bytes()), "text/plain; charset=utf-8");
        assert_eq!(detect(b"abc\x00def"), "application/octet-stream");
    }

    #[test]
    fn only_the_first_512_bytes_count() {
        let mut data = vec![b'a'; SNIFF_LEN];
        data.push(0);
        assert_eq!(detect(&data), "text/plain; charset=utf-8");
    }
}
