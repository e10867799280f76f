//! Gzip compression on all cores: the stream is cut into blocks compressed independently as raw
//! deflate, each but the last ending on a byte-aligned sync flush, so that their concatenation
//! is one ordinary deflate stream inside one gzip member (the pigz layout, without shared
//! dictionaries). Any gzip reader (zlib, Python, ITK) reads it.

use flate2::{Compress, Compression, FlushCompress, Status};
use rayon::prelude::*;

const BLOCK_BYTES: usize = 4 << 20;

/// The gzip file holding the concatenation of `parts`.
pub fn gzip_parallel(parts: &[&[u8]], level: Compression) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let blocks: Vec<&[u8]> = parts.iter().flat_map(|p| p.chunks(BLOCK_BYTES)).filter(|b| !b.is_empty()).collect();
    let last = blocks.len().saturating_sub(1);
    let compressed: Vec<Vec<u8>> =
        blocks.par_iter().enumerate().map(|(n, block)| deflate_block(block, level, n == last)).collect();

    let mut crc = crc32fast::Hasher::new();
    for part in parts {
        crc.update(part);
    }
    let mut out = Vec::with_capacity(compressed.iter().map(Vec::len).sum::<usize>() + 20);
    // Header: magic, deflate, no flags, no mtime, no extra flags, unknown OS.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    if blocks.is_empty() {
        out.extend_from_slice(&deflate_block(&[], level, true));
    }
    for block in &compressed {
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out
}

fn deflate_block(input: &[u8], level: Compression, last: bool) -> Vec<u8> {
    let mut compressor = Compress::new(level, false);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    let mut out = Vec::with_capacity(input.len() / 2 + 1024);
    loop {
        let consumed = compressor.total_in() as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let status = compressor
            .compress_vec(&input[consumed..], &mut out, flush)
            .expect("deflate of an in-memory buffer cannot fail");
        let done_input = compressor.total_in() as usize == input.len();
        let has_room = out.capacity() > out.len();
        match status {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError if done_input && !last && has_room => break,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips_through_a_standard_gzip_reader() {
        let data: Vec<u8> =
            (0..(9 << 20) + 12345u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 & 0x0f).collect();
        let header = b"header bytes";
        let gz = gzip_parallel(&[header, &data], Compression::fast());
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut decoded).unwrap();
        assert_eq!(&decoded[..header.len()], header);
        assert!(decoded[header.len()..] == data[..]);
        let mut empty = Vec::new();
        flate2::read::GzDecoder::new(&gzip_parallel(&[], Compression::fast())[..]).read_to_end(&mut empty).unwrap();
        assert!(empty.is_empty());
    }
}
