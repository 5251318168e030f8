//! `audithawk scan`: offline forensics over files, directories and stdin. (Being implemented.)
