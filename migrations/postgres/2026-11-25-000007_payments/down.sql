DROP INDEX grants_suspended;
DROP TABLE overdue_invoices;
DROP TABLE stripe_events;
DROP TABLE stripe_customers;
DROP TABLE payment_jobs;
