//! Sallyport layer 4: everything that works on bytes rather than HTTP messages.

pub mod tcp;
