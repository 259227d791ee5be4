//! Money and billing rules as pure functions over plain data.
