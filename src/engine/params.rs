//! Whole-module parameter operations the trainer needs and burn leaves to the user: the key
//! encoder's EMA, SGD with momentum whose state we own (so it can be saved without synchronous
//! reads), and reading / writing all parameters as flat vectors (checkpoints).
//!
//! Parameters are addressed by visiting order, which is fixed by the module's structure, so two
//! encoders of one config line up parameter by parameter.

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Transaction;

use super::error::EngineError;

/// Every float parameter, flattened, detached from autodiff, in visiting order.
pub fn flat_params<M: Module>(module: &M) -> Vec<Tensor<1>> {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().without_autodiff().reshape([-1]));
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

/// Replaces each float parameter by `f(index, current value flattened)`, keeping ids, shapes
/// and whether it requires a gradient.
pub fn map_params<M: Module>(module: M, f: impl FnMut(usize, Tensor<1>) -> Tensor<1>) -> M {
    struct Map<F> {
        index: usize,
        f: F,
    }
    impl<F: FnMut(usize, Tensor<1>) -> Tensor<1>> ModuleMapper for Map<F> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, tensor, mapper) = param.consume();
            let shape = tensor.shape();
            let tracked = tensor.is_autodiff();
            let require_grad = tensor.is_require_grad();
            let flat = tensor.without_autodiff().reshape([-1]);
            let mut out: Tensor<D> = (self.f)(self.index, flat).reshape(shape);
            self.index += 1;
            if tracked {
                out = out.autodiff();
            }
            if require_grad {
                out = out.require_grad();
            }
            Param::from_mapped_value(id, out, mapper)
        }
    }
    module.map(&mut Map { index: 0, f })
}

/// The gradient of every float parameter, flattened, in visiting order (`None` where the
/// backward pass gave none: running statistics).
pub fn flat_grads<M: Module>(
    module: &M,
    grads: &burn::tensor::Gradients,
) -> Vec<Option<Tensor<1>>> {
    struct Grads<'a>(&'a burn::tensor::Gradients, Vec<Option<Tensor<1>>>);
    impl ModuleVisitor for Grads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.1
                .push(param.val().grad(self.0).map(|g| g.reshape([-1])));
        }
    }
    let mut g = Grads(grads, Vec::new());
    module.visit(&mut g);
    g.1
}

/// key <- m * key + (1 - m) * query, parameter by parameter (no gradient flows to the key).
pub fn ema_update<M: Module>(key: M, query: &M, m: f64) -> M {
    let q = flat_params(query);
    map_params(key, |i, k| {
        // k: [p], q[i]: [p]
        let device = k.device();
        k.mul_scalar(m) + q[i].clone().to_device(&device).mul_scalar(1.0 - m)
    })
}

/// SGD with momentum and weight decay, PyTorch semantics:
/// v <- mu * v + (g + wd * p);  p <- p - lr * v.
#[derive(Clone, Debug, Default)]
pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    /// One velocity per parameter (visiting order); empty before the first step.
    pub velocity: Vec<Tensor<1>>,
}

impl Sgd {
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        Self {
            momentum,
            weight_decay,
            velocity: Vec::new(),
        }
    }

    /// One update of `module` from the gradients of a backward pass.
    pub fn step<M: Module>(&mut self, module: M, grads: &burn::tensor::Gradients, lr: f64) -> M {
        let grads_flat = flat_grads(&module, grads);
        self.step_flat(module, &grads_flat, lr)
    }

    /// One update from flat gradients in visiting order (`None`: the parameter has none).
    pub fn step_flat<M: Module>(
        &mut self,
        module: M,
        grads_flat: &[Option<Tensor<1>>],
        lr: f64,
    ) -> M {
        let fresh = self.velocity.is_empty();
        let (mu, wd) = (self.momentum, self.weight_decay);
        let mut velocity = std::mem::take(&mut self.velocity);
        let module = map_params(module, |i, p| {
            let Some(g) = grads_flat.get(i).cloned().flatten() else {
                if fresh {
                    velocity.push(p.zeros_like());
                }
                return p;
            };
            let d = if wd > 0.0 {
                g + p.clone().mul_scalar(wd)
            } else {
                g
            };
            let v = if fresh {
                d
            } else {
                velocity[i].clone().mul_scalar(mu) + d
            };
            let out = p - v.clone().mul_scalar(lr);
            if fresh {
                velocity.push(v);
            } else {
                velocity[i] = v;
            }
            out
        });
        self.velocity = velocity;
        module
    }
}

/// Reads tensors to host vectors with one asynchronous transaction (the only kind of read that
/// works on WebGPU in a browser).
pub async fn read_all(tensors: Vec<Tensor<1>>) -> Result<Vec<Vec<f32>>, EngineError> {
    if tensors.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = Transaction::default();
    for t in tensors {
        tx = tx.register(t);
    }
    let data = tx
        .execute_async()
        .await
        .map_err(|e| EngineError::Device(format!("reading tensors back: {e:?}")))?;
    data.into_iter()
        .map(|d| {
            d.try_into_vec_as::<f32>()
                .map_err(|e| EngineError::Device(format!("tensor data: {e:?}")))
        })
        .collect()
}

/// Overwrites every float parameter from flat vectors (a checkpoint), checking sizes.
pub fn load_params<M: Module>(
    module: M,
    values: &[Vec<f32>],
    device: &Device,
) -> Result<M, EngineError> {
    let expected = flat_params(&module);
    if expected.len() != values.len() {
        return Err(EngineError::Checkpoint(format!(
            "the checkpoint has {} parameter tensors, the model {}",
            values.len(),
            expected.len()
        )));
    }
    for (i, (e, v)) in expected.iter().zip(values).enumerate() {
        if e.dims()[0] != v.len() {
            return Err(EngineError::Checkpoint(format!(
                "parameter {i} has {} values in the checkpoint, {} in the model",
                v.len(),
                e.dims()[0]
            )));
        }
    }
    Ok(map_params(module, |i, _| {
        Tensor::from_data(
            TensorData::new(values[i].clone(), [values[i].len()]),
            device,
        )
    }))
}
