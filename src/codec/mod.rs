//! Codecs below preprocessing and capture: the structure of JPEG and PNG files (whole or cut,
//! Huffman tables) and YUYV 4:2:2 conversion. Nothing here reads files or cameras.

pub mod jpeg;
pub mod png;
pub mod yuyv;
