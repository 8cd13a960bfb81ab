# Lambda: the deployment zip and a local invoke of a handler (HANDLER=report, EVENT=path, REPEAT=n).
.PHONY: lambda-package invoke

##@ Lambda

lambda-package: install ## build build/lambda.zip for python3.12 x86_64 (RDS_CA_BUNDLE=path adds the CA)
	$(PY) -m scripts.package_lambda --output build/lambda.zip $(if $(LAMBDA_WITH_BOTO3),--with-boto3)

invoke: install ## run a Lambda handler locally on a local PostgreSQL with a sample event
	$(PY) -m scripts.invoke_local $(if $(HANDLER),--handler $(HANDLER))$(if $(EVENT), --event $(EVENT))$(if $(REPEAT), --repeat $(REPEAT))
