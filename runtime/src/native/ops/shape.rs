//! Operators that change only the shape: `Flatten`, `Reshape`, `Identity` (and `Dropout`,
//! which is the identity at inference).

use super::{required, Op};
use crate::native::tensor::{volume, Tensor};

/// `Flatten`: `[d0..d(axis-1)] x [d(axis)..]`.
#[derive(Debug)]
pub struct Flatten {
    /// The split axis (may be negative).
    pub axis: i64,
}

impl Op for Flatten {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0)?;
        let rank = x.shape.len() as i64;
        let axis = if self.axis < 0 {
            self.axis + rank
        } else {
            self.axis
        };
        if !(0..=rank).contains(&axis) {
            return Err(format!(
                "Flatten axis {} of a rank-{rank} tensor",
                self.axis
            ));
        }
        let (lead, rest) = x.shape.split_at(axis as usize);
        let shape = vec![volume(lead)?, volume(rest)?];
        Ok(vec![Tensor::new(shape, x.data.clone())?])
    }
}

/// `Reshape` to a shape given as the second input (0 copies a dimension, -1 infers one).
#[derive(Debug)]
pub struct Reshape;

impl Op for Reshape {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        let x = required(inputs, 0)?;
        let spec = required(inputs, 1)?.to_i64()?;
        let mut infer = None;
        let mut shape = Vec::with_capacity(spec.len());
        for (i, &d) in spec.iter().enumerate() {
            shape.push(match d {
                0 => *x
                    .shape
                    .get(i)
                    .ok_or("Reshape copies a dimension the input lacks")?,
                -1 if infer.is_none() => {
                    infer = Some(i);
                    1
                }
                d if d > 0 => d as usize,
                d => return Err(format!("Reshape to dimension {d}")),
            });
        }
        if let Some(i) = infer {
            let known = volume(&shape)?;
            if known == 0 || x.len() % known != 0 {
                return Err(format!("cannot reshape {:?} to {spec:?}", x.shape));
            }
            shape[i] = x.len() / known;
        }
        Tensor::new(shape, x.data.clone())
            .map(|t| vec![t])
            .map_err(|e| format!("cannot reshape {:?} to {spec:?}: {e}", x.shape))
    }
}

/// `Identity`, and `Dropout` at inference.
#[derive(Debug)]
pub struct Identity;

impl Op for Identity {
    fn run(&self, inputs: &[Option<&Tensor>], _: usize) -> Result<Vec<Tensor>, String> {
        Ok(vec![required(inputs, 0)?.clone()])
    }
}
