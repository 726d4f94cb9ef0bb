-- An operator's switch of a deployed stage's key checks (`keygate enforcement set`, the console):
-- 'report' makes its private routes report-only, 'enforce' its report-only routes private; NULL
-- leaves them as deployed. Kept across deploys (they update the row, not replace it).
ALTER TABLE stages ADD COLUMN enforcement TEXT CHECK (enforcement IN ('report', 'enforce'));
