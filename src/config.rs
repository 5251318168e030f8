//! Configuration. (Being implemented.)
