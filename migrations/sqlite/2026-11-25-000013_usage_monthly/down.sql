DROP TABLE usage_monthly;
