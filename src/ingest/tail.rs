//! `audithawk tail`: follows JSON-lines audit logs through rotation. (Being implemented.)
