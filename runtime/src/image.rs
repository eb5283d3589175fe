//! One image file (PNG or JPEG) to the planar bytes a model takes: decoded under size limits,
//! resized, and converted to grayscale or RGB. `edgekd run` uses it for image inputs, and the
//! training side for image-folder datasets, so both see a file the same way.

use std::io::Cursor;

/// What a decoder may spend on one file. The defaults admit any photo a phone takes
/// (8192 × 8192) and refuse headers that claim more before any pixel buffer is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest width or height accepted.
    pub max_side: u32,
    /// Largest allocation the decoder may make, in bytes.
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_side: 8192,
            max_alloc: 512 << 20,
        }
    }
}

/// Why a file could not be turned into pixels.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// Not PNG or JPEG, or a damaged one.
    #[error("not a readable PNG or JPEG image: {0}")]
    Decode(String),
    /// The header claims an image past the limits.
    #[error("the image is {width}x{height}; the limit is {max_side} pixels a side ({reason})")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The side limit in force.
        max_side: u32,
        /// The decoder's words.
        reason: String,
    },
    /// The requested layout cannot be produced.
    #[error("cannot produce {channels}-channel {rows}x{cols} images: {reason}")]
    Layout {
        /// Requested channels.
        channels: usize,
        /// Requested height.
        rows: usize,
        /// Requested width.
        cols: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// What a file's header says, read without decoding any pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Whether it stores colour (RGB, with or without alpha) rather than gray levels.
    pub colour: bool,
}

impl ImageHeader {
    /// The channels a model sees this image with: 3 for colour, 1 for gray.
    pub fn channels(&self) -> usize {
        if self.colour {
            3
        } else {
            1
        }
    }
}

/// Reads the header of `bytes` (PNG or JPEG): size and whether the image is in colour.
pub fn header(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    let decoder = ::image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Decode(e.to_string()))?
        .into_decoder()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let (width, height) = ::image::ImageDecoder::dimensions(&decoder);
    Ok(ImageHeader {
        width,
        height,
        colour: ::image::ImageDecoder::color_type(&decoder).has_color(),
    })
}

/// Decodes `bytes` and returns `channels × rows × cols` bytes, channel-major (CHW), the image
/// resized to `rows × cols` (triangle filter, aspect ratio not kept, as torchvision's
/// `Resize((h, w))`) and converted to grayscale (`channels` 1) or RGB (3).
pub fn decode(
    bytes: &[u8],
    channels: usize,
    rows: usize,
    cols: usize,
    limits: ImageLimits,
) -> Result<Vec<u8>, ImageError> {
    let layout = |reason| ImageError::Layout {
        channels,
        rows,
        cols,
        reason,
    };
    if channels != 1 && channels != 3 {
        return Err(layout(
            "only 1 (grayscale) or 3 (RGB) channels can be decoded",
        ));
    }
    let side = |n: usize| {
        u32::try_from(n)
            .ok()
            .filter(|&n| n > 0 && n <= limits.max_side)
    };
    let (Some(h), Some(w)) = (side(rows), side(cols)) else {
        return Err(layout(
            "each side must be between 1 and the image size limit",
        ));
    };
    let mut reader = ::image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    // The side limit is checked below, from the header, so the error can give the size; the
    // allocation limit also bounds the decoder's own buffers.
    let mut l = ::image::Limits::default();
    l.max_alloc = Some(limits.max_alloc);
    reader.limits(l);
    let decoder = reader
        .into_decoder()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let (width, height) = ::image::ImageDecoder::dimensions(&decoder);
    let too_large = |reason: String| ImageError::TooLarge {
        width,
        height,
        max_side: limits.max_side,
        reason,
    };
    if width == 0 || height == 0 || width > limits.max_side || height > limits.max_side {
        return Err(too_large("refused before decoding".into()));
    }
    let bytes_needed = ::image::ImageDecoder::total_bytes(&decoder);
    if bytes_needed > limits.max_alloc {
        return Err(too_large(format!(
            "{bytes_needed} bytes decoded, over the {} allowed; refused before decoding",
            limits.max_alloc
        )));
    }
    let img = ::image::DynamicImage::from_decoder(decoder).map_err(|e| match e {
        ::image::ImageError::Limits(l) => too_large(l.to_string()),
        e => ImageError::Decode(e.to_string()),
    })?;
    let img = if (img.width(), img.height()) == (w, h) {
        img
    } else {
        img.resize_exact(w, h, ::image::imageops::FilterType::Triangle)
    };
    let rgb = img.to_rgb8();
    Ok(if channels == 1 {
        // Pillow's `convert("L")` (ITU-R 601-2 luma, in its fixed-point form), which is what a
        // teacher trained through torchvision's Grayscale saw; the image crate's own luma uses
        // the Rec. 709 weights and would shift every gray level of a colour photo.
        rgb.pixels()
            .map(|p| {
                let [r, g, b] = p.0.map(u32::from);
                ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
            })
            .collect()
    } else {
        (0..3)
            .flat_map(|c| rgb.pixels().map(move |p| p.0[c]))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
        let img = ::image::RgbImage::from_fn(w, h, |x, y| ::image::Rgb(f(x, y)));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ::image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn rgb_comes_out_channel_major_and_gray_by_luma() {
        let bytes = png(2, 1, |x, _| if x == 0 { [255, 0, 0] } else { [0, 0, 255] });
        let rgb = decode(&bytes, 3, 1, 2, ImageLimits::default()).unwrap();
        assert_eq!(rgb, [255, 0, 0, 0, 0, 255]);
        // Pillow's L: 255 * 0.299 = 76.2, 255 * 0.114 = 29.1; the image crate's Rec. 709 luma
        // would give 54 and 18.
        let gray = decode(&bytes, 1, 1, 2, ImageLimits::default()).unwrap();
        assert_eq!(gray, [76, 29]);
    }

    #[test]
    fn headers_give_size_and_colour() {
        let colour = png(5, 3, |x, y| [x as u8, y as u8, 9]);
        let h = header(&colour).unwrap();
        assert_eq!((h.width, h.height, h.channels()), (5, 3, 3));
        let mut gray = Cursor::new(Vec::new());
        ::image::GrayImage::new(4, 7)
            .write_to(&mut gray, ::image::ImageFormat::Png)
            .unwrap();
        let h = header(gray.get_ref()).unwrap();
        assert_eq!((h.width, h.height, h.channels()), (4, 7, 1));
        assert!(header(b"not an image").is_err());
    }

    #[test]
    fn grayscale_matches_pillow_on_random_colours() {
        // Made by runtime/tests/data/make_pillow_gray.py with Pillow 13: 256 random RGB
        // pixels, and what `Image.convert("L")` makes of them.
        let png = include_bytes!("../tests/data/pillow-rgb16.png");
        let gray = include_bytes!("../tests/data/pillow-rgb16.L");
        assert_eq!(
            decode(png, 1, 16, 16, ImageLimits::default()).unwrap(),
            gray
        );
    }

    #[test]
    fn resizes_to_the_requested_size() {
        let bytes = png(56, 40, |_, _| [200, 200, 200]);
        let out = decode(&bytes, 1, 28, 28, ImageLimits::default()).unwrap();
        assert_eq!(out.len(), 28 * 28);
        assert!(out.iter().all(|&p| p == 200));
    }

    #[test]
    fn a_header_past_the_limit_is_refused_before_decoding() {
        let bytes = png(64, 32, |_, _| [0, 0, 0]);
        let small = ImageLimits {
            max_side: 40,
            ..Default::default()
        };
        let err = decode(&bytes, 1, 28, 28, small).unwrap_err().to_string();
        assert!(err.contains("64x32") && err.contains("40"), "{err}");
        // A PNG header claiming 100000 x 100000 pixels, with no data behind it.
        let mut huge = bytes.clone();
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&huge[12..29]);
        huge[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let err = decode(&huge, 1, 28, 28, ImageLimits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("100000x100000"), "{err}");
    }

    #[test]
    fn garbage_and_bad_layouts_are_errors() {
        let err = decode(b"GIF89a....", 1, 28, 28, ImageLimits::default()).unwrap_err();
        assert!(err.to_string().contains("not a readable"), "{err}");
        let bytes = png(4, 4, |_, _| [0, 0, 0]);
        for (c, r, w) in [(2, 28, 28), (1, 0, 28), (3, 28, 1 << 20)] {
            assert!(matches!(
                decode(&bytes, c, r, w, ImageLimits::default()),
                Err(ImageError::Layout { .. })
            ));
        }
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() / 2);
        assert!(decode(&cut, 1, 4, 4, ImageLimits::default()).is_err());
    }
}
