//! Feeds arbitrary bytes to both extraction paths: the fast scanner (`extract_xdr`) and
//! full decoding followed by extraction. Neither may panic, and whenever the full
//! decoder accepts the input and extraction succeeds, the fast path must give the same
//! records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::{decode_ledger, Extractor, Network};

fuzz_target!(|data: &[u8]| {
    let mut extractor = Extractor::new(Network::pubnet());
    let fast = extractor.extract_xdr(data);
    if let Ok(meta) = decode_ledger(data) {
        if let (Ok(full), Ok(fast)) = (extractor.extract(&meta), &fast) {
            assert_eq!(&full.payments, &fast.payments);
            assert_eq!(&full.stats, &fast.stats);
        }
    }
});
