//! `audithawk serve`: the API server's audit webhook backend. (Being implemented.)
