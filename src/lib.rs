//! secmon
