'use strict';

// The Node handler a Serverless user would write for GET /candidates.
module.exports.list = async () => ({
  statusCode: 200,
  body: JSON.stringify({ candidates: [] }),
});
