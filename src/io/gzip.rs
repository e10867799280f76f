//! Gzip compression on all cores: the stream is cut into blocks compressed independently as raw
//! deflate, each but the last ending on a byte-aligned sync flush, so that their concatenation
//! is one ordinary deflate stream inside one gzip member (the pigz layout, without shared
//! dictionaries). Any gzip reader (zlib, Python, ITK) reads it.

use std::io::Write;

use flate2::{Compress, Compression, FlushCompress, Status};
use rayon::prelude::*;

/// Compresses `header` followed by `block_count` blocks made on demand by `make_block(n)`,
/// writing one gzip member to `out`. Blocks are made and compressed a few at a time on all
/// cores, so that neither the whole uncompressed stream nor the whole compressed file need to
/// be in memory at once.
pub fn write_gzip_blocks(
    out: &mut dyn Write,
    header: &[u8],
    block_count: usize,
    level: Compression,
    make_block: impl Fn(usize) -> Vec<u8> + Sync,
) -> std::io::Result<()> {
    // Header: magic, deflate, no flags, no mtime, no extra flags, unknown OS.
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(header);
    let mut total = header.len() as u64;
    out.write_all(&deflate_block(header, level, block_count == 0))?;
    let window = 2 * rayon::current_num_threads();
    for first in (0..block_count).step_by(window) {
        let last = (first + window).min(block_count);
        let compressed: Vec<(Vec<u8>, crc32fast::Hasher, usize)> = (first..last)
            .into_par_iter()
            .map(|n| {
                let block = make_block(n);
                let mut block_crc = crc32fast::Hasher::new();
                block_crc.update(&block);
                (deflate_block(&block, level, n + 1 == block_count), block_crc, block.len())
            })
            .collect();
        for (bytes, block_crc, length) in compressed {
            out.write_all(&bytes)?;
            crc.combine(&block_crc);
            total += length as u64;
        }
    }
    out.write_all(&crc.finalize().to_le_bytes())?;
    out.write_all(&(total as u32).to_le_bytes())
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

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut decoded).unwrap();
        decoded
    }

    #[test]
    fn round_trips_through_a_standard_gzip_reader() {
        let block_bytes = 3 << 20;
        let block = |n: usize| -> Vec<u8> {
            let length = if n == 4 { 12345 } else { block_bytes };
            (0..length).map(|i| ((i * 2654435761 + n) >> 7) as u8 & 0x0f).collect()
        };
        let mut gz = Vec::new();
        write_gzip_blocks(&mut gz, b"header bytes", 5, Compression::fast(), block).unwrap();
        let decoded = gunzip(&gz);
        let expected: Vec<u8> = b"header bytes".iter().copied().chain((0..5).flat_map(block)).collect();
        assert!(decoded == expected);
        let mut only_header = Vec::new();
        write_gzip_blocks(&mut only_header, b"alone", 0, Compression::fast(), |_| Vec::new()).unwrap();
        assert_eq!(gunzip(&only_header), b"alone");
    }
}
