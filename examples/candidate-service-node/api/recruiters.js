'use strict';

// Recruiters only: a candidate is removed by a recruiter, not by any client holding the API key.
// `recruiterAuth` is a Lambda TOKEN authorizer: API Gateway (and keygate) call it with the
// request's `Authorization` header and the method's ARN, and it answers with an IAM policy.
// Its answer is cached for the token (resultTtlInSeconds, 300 by default).

const AWS = require('aws-sdk');

const dynamoDb = new AWS.DynamoDB.DocumentClient();

// `name:token` pairs, comma-separated (serverless.yml sets RECRUITER_TOKENS).
const recruiters = new Map(
  (process.env.RECRUITER_TOKENS || '')
    .split(',')
    .map(pair => pair.trim().split(':'))
    .filter(([name, token]) => name && token)
    .map(([name, token]) => [token, name]));

module.exports.authorize = (event, context, callback) => {
  const token = (event.authorizationToken || '').replace(/^Bearer /, '');
  const recruiter = recruiters.get(token);
  if (!recruiter) {
    // API Gateway's 401, as a Lambda authorizer asks for it.
    callback('Unauthorized');
    return;
  }
  // arn:aws:execute-api:region:account:api/stage/METHOD/path: this recruiter may delete any
  // candidate of this stage (the answer is cached and applied to every method it covers).
  const stage = event.methodArn.split('/').slice(0, 2).join('/');
  callback(null, {
    principalId: recruiter,
    policyDocument: {
      Version: '2012-10-17',
      Statement: [{ Action: 'execute-api:Invoke', Effect: 'Allow', Resource: `${stage}/DELETE/candidates/*` }],
    },
    context: { recruiter },
  });
};

module.exports.remove = (event, context, callback) => {
  const params = {
    TableName: process.env.CANDIDATE_TABLE,
    Key: { id: event.pathParameters.id },
  };
  dynamoDb.delete(params).promise()
    .then(() => {
      console.log(`Candidate ${event.pathParameters.id} removed by ${event.requestContext.authorizer.recruiter}`);
      callback(null, { statusCode: 204, body: '' });
    })
    .catch(error => {
      console.error(error);
      callback(new Error('Couldn\'t remove candidate.'));
    });
};
