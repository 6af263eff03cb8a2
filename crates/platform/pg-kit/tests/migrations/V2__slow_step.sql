-- Slow on purpose: widens the window in which two concurrent runs would collide without
-- the advisory lock.
SELECT pg_sleep(0.3);
INSERT INTO probe (id, note) VALUES (1, 'seeded once');
