#![allow(clippy::unwrap_used)]

use super::*;

fn header_bytes(headers: &[Header]) -> u64 {
    bytes_of(recorded(headers))
}

fn cost(headers: &[Header]) -> usize {
    headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + HEADER_BOOKKEEPING)
        .sum()
}

proptest::proptest! {
    /// Framed headers read back as they were: the first ones, whole and in order,
    /// within the room; every byte of a name or value is kept or counted.
    #[test]
    fn framed_headers_read_back_whole(
        headers in proptest::collection::vec(("[a-z-]{0,12}", "\\PC{0,40}"), 0..12),
        room in 0usize..400,
    ) {
        let headers: Vec<Header> = headers
            .into_iter()
            .map(|(name, value)| Header { name, value })
            .collect();
        let mut block = vec![0u8; room];
        let (len, left_out) = encode_headers(recorded(&headers), &mut block, 0);
        proptest::prop_assert!(len <= room);
        let read = decode_headers(frames(&block[..len]));
        proptest::prop_assert_eq!(&read[..], &headers[..read.len()]);
        proptest::prop_assert_eq!(cost(&read), len);
        proptest::prop_assert_eq!(header_bytes(&read) + left_out, header_bytes(&headers));
    }

    /// A target is kept up to what fits, cut at a character boundary; the headers
    /// get the room it leaves; what does not fit is counted.
    #[test]
    fn a_long_target_is_cut_at_a_character_and_counted(
        target in "/[a-zé€]{0,400}",
        room in 0usize..500,
    ) {
        let headers = [Header { name: "x-a".into(), value: "b".repeat(10) }];
        let mut block = vec![0u8; room];
        let (len, left_out) = encode_request_head(&target, recorded(&headers), &mut block);
        proptest::prop_assert!(len <= room);
        let mut parts = frames(&block[..len]);
        let kept = parts
            .next()
            .map(|t| String::from_utf8(t.to_vec()).unwrap())
            .unwrap_or_default();
        let kept_headers = decode_headers(parts);
        proptest::prop_assert!(target.starts_with(&kept));
        proptest::prop_assert_eq!(decode_target(&block[..len]), kept.clone());
        proptest::prop_assert_eq!(
            left_out,
            (target.len() - kept.len()) as u64 + header_bytes(&headers)
                - header_bytes(&kept_headers)
        );
    }
}
