//! Sallyport
