DROP TABLE invoice_counters;
DROP TABLE payments;
DROP TABLE credit_note_lines;
DROP TABLE credit_notes;
DROP TABLE invoice_lines;
DROP TABLE invoices;
DROP TABLE billing_runs;
