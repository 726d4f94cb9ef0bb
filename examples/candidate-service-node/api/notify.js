'use strict';

// Invoked with the candidates table's stream records (`- stream:` in serverless.yml). The
// series' next post sends an email to each new candidate here; this one logs it.
module.exports.inserted = (event, context, callback) => {
  event.Records.forEach((record) => {
    if (record.eventName === 'INSERT') {
      const candidate = record.dynamodb.NewImage;
      console.log(`New candidate ${candidate.fullname.S} <${candidate.email.S}> (${candidate.id.S})`);
    }
  });
  callback(null, `Processed ${event.Records.length} records.`);
};
