@echo off
rem install.bat [/nopause] - register the BK-CI agent as a Windows service
rem and start it (agent-behaviour 11.3, with sc.exe as GoAgent does).
rem
rem   1. unpack jre.zip into jdk\ when jdk\ is missing; make logs\, workspace\
rem   2. an existing service of this agent is stopped and deleted first
rem   3. sc.exe create devops_agent_<id> binPath= "<dir>\devopsDaemon.exe"
rem      start= auto, restart on failure after 5 s, then sc.exe start
rem The service name comes from devops.agent.id in .agent.properties.
rem
rem NOT TESTED: these scripts cannot run on the Linux build machine, and the
rem Windows binaries (devopsDaemon.exe, devopsAgent.exe) are not built yet.
rem devopsDaemon.exe must speak the service control protocol to run under
rem sc.exe (docs/scripts.md).
setlocal EnableExtensions
cd /d "%~dp0" || goto :fail
set "WORKDIR=%CD%"
call :service_name || goto :fail

if exist jdk goto :dirs
if not exist jre.zip goto :dirs
echo unpacking jre.zip into jdk
powershell -NoProfile -ExecutionPolicy Bypass -Command "Expand-Archive -Force -LiteralPath 'jre.zip' -DestinationPath 'jdk'"
if errorlevel 1 echo warning: cannot unpack jre.zip
:dirs
if not exist logs mkdir logs
if not exist workspace mkdir workspace

sc.exe query "%SERVICE%" >nul 2>&1
if errorlevel 1 goto :create
echo service %SERVICE% exists: replacing it
call "%WORKDIR%\stop.bat"
sc.exe delete "%SERVICE%" >nul
:create
sc.exe create "%SERVICE%" binPath= "\"%WORKDIR%\devopsDaemon.exe\"" start= auto DisplayName= "BK-CI agent %SERVICE%"
if errorlevel 1 goto :fail
sc.exe description "%SERVICE%" "BK-CI build agent daemon (%WORKDIR%)" >nul
rem Restart the daemon when it fails; an agent deleted on the server makes
rem the daemon exit 88, which the daemon reports as a stop, not a failure.
sc.exe failure "%SERVICE%" reset= 86400 actions= restart/5000/restart/10000/restart/60000 >nul
sc.exe start "%SERVICE%"
if errorlevel 1 goto :fail
echo service %SERVICE% installed and started
if /i not "%~1"=="/nopause" pause
endlocal
exit /b 0

:fail
echo install.bat: failed
if /i not "%~1"=="/nopause" pause
endlocal
exit /b 1

rem service_name: SERVICE=devops_agent_<devops.agent.id>; errorlevel 1 if none.
:service_name
set "AGENT_ID="
if not exist .agent.properties goto :no_id
for /f "usebackq tokens=1,* delims== " %%a in (`findstr /b /c:"devops.agent.id" .agent.properties`) do (
	if "%%a"=="devops.agent.id" set "AGENT_ID=%%b"
)
if not defined AGENT_ID goto :no_id
set "SERVICE=devops_agent_%AGENT_ID%"
exit /b 0
:no_id
echo no devops.agent.id in .agent.properties
exit /b 1
